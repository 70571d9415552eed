"""The web pages: Explore, model pages with a Playground, predictions and the account, served by
`modelyard serve` beside the API (server-rendered Jinja2, a little plain JavaScript)."""
