"""Many runs, one result.

    league.py       every family trained with one recipe on one dataset, side by side
    experiments.py  the design arguments of the networks, each as a controlled experiment
    degradation.py  the degradation problem of deep plain networks, and what shortcuts do
    compare.py      accuracy against cost (Canziani et al. 2016)
    bench.py        throughput and latency against the reference implementations and the machine's peak
"""
