from xinf_watch.cli import main

raise SystemExit(main())
