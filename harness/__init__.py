"""copa-bench's running and measuring half: data, tasks, metrics, profiling, results and the CLI."""
