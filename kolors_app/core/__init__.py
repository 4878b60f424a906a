"""Settings, the request and its parts, their validation, schedulers: plain Python, no gradio."""
