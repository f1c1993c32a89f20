"""One ``APIRouter`` per route family, included by ``create_app`` (web/app.py) in a fixed order:
the order routes are matched in, and the order of the paths in the OpenAPI schema."""
