"""ControlNet models and preprocessors, and the inpainting canvas."""
