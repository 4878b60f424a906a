"""AUTOMATIC1111's REST API (`--api`): /sdapi/v1/ and sd-webui-controlnet's routes, for programs that speak it."""

from kolors_app.api.a1111.routes import a1111_router

__all__ = ["a1111_router"]
