"""Graph -> loop IR: per-op loop nests, schedules chosen per CPU, memory planning."""
