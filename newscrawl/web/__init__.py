"""`newscrawl web`: a console for operators and downstream teams (Starlette, Jinja2, uvicorn).

- `views`: what each page shows, as plain functions of the database (tested without a server);
- `charts`: server-side SVG (no script, no outside asset);
- `security`: the bind rule, the token, sessions and CSRF;
- `app`: the Starlette application, thin handlers over the above.
Templates and the style sheet ship in the package (templates/, static/).
"""
