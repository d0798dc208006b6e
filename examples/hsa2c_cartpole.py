"""
HSA2C on CartPole-v1 with a learning curve
==========================================

Trains :class:`dask_dpsgd.HSA2CAgent` on the embedded cluster until the mean return of
the last 100 episodes reaches 475, evaluates the deterministic policy and writes the
learning curve to a PNG (matplotlib).
"""

from __future__ import annotations

import argparse

from dask_dpsgd import HSA2CAgent
from dask_dpsgd.plotting import plot_learning_curve


def main(total_timesteps: int, plot: str) -> None:
    agent = HSA2CAgent("CartPole-v1", total_timesteps=total_timesteps,
                       target_return=475, random_state=0, verbose=1).fit()
    print(f"{agent.num_timesteps_} steps, {len(agent.episode_returns_)} episodes")
    print(f"evaluation return: {agent.score(n_episodes=20, random_state=0):.1f}")
    print("learning curve:", plot_learning_curve(agent, plot, target=475))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--total-timesteps", type=int, default=300_000)
    parser.add_argument("--plot", default="hsa2c_cartpole.png")
    args = parser.parse_args()
    main(args.total_timesteps, args.plot)
