"""The entrances for programs: the app's REST route, AUTOMATIC1111's API and MCP."""
