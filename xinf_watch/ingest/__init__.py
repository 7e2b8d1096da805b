"""Following log files through rotation and reading their lines: the first stage."""
