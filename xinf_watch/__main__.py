from xinf_watch.app.cli import main

raise SystemExit(main())
