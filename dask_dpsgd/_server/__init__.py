"""Parameter-server state and the Dask Actor shell around it (numpy only, no Dask)."""
