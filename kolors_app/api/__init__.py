"""The entrances for programs: the app's REST route, AUTOMATIC1111's API, OpenAI's images API and MCP."""
