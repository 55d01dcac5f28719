"""The spiders: finews (category pages and posts), feed (Atom) and share (the share host by id)."""
