"""Ray job entrypoints: thin layers that wire ``models`` to Ray Data, Ray Train and Ray Serve."""
