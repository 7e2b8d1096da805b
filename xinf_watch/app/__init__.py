"""The programs: the pipeline that joins the stages, the daemon, replay, demo, the CLI."""
