"""The page: one module per tab plus shared controls; the only package that builds gradio Blocks."""
