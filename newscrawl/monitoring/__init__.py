"""Monitors after every crawl, their alerts, and what `newscrawl health` and `newscrawl metrics`
read (README, "Operating it")."""
