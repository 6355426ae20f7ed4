"""Mixture of experts: regime specialists (PPO-LSTM experts trained on regime-weighted rewards) and a
gate that weights (supervised on the regime detector) or picks (trained by RL over the frozen experts)
them. ``tradebot.rl.moe.mixture.MixturePolicy`` acts like any ``Policy``; ``tradebot.rl.moe.training``
builds one from ``experiments/moe.yaml``."""
