"""The servers the project runs on this machine (FerretDB, Redis, scrapyd) and the .local/ folder
they own.
"""
