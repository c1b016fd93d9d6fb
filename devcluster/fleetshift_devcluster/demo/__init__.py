"""The guardrail walkthrough (``make demo``): real runtimes behind kwok pods, a real
Prometheus, the operator, and steady traffic, telling the seed's canary and linear
stories. See ``story`` for the plot and ``launcher`` for how pods get processes."""
