"""The Hub repos the app uses and fetching their weights on first use."""
