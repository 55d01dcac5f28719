"""The spiders: finews (categories and posts), feed (Atom) and share (the share host by id)."""
