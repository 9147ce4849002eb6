"""HTTP routers: parse the request, call one service, return a schema. Only here is FastAPI."""
