"""User profiling: who is profiled, the evidence each profile is written from, ranking and refinement."""
