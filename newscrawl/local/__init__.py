"""The servers the project runs on this machine (FerretDB, Redis, scrapyd) and their .local/ folder."""
