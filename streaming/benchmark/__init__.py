"""The bench suite behind `infinitetalk-live bench`: `options` (arguments, light) and `suite.run_bench`."""
