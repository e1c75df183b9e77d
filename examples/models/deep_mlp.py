"""Deeper sample models: residual MLP blocks, and a matmul/reshape/mul mix with two inputs.

    --class DeepMLP   --inputs '[(2, 4, 8)]'
    --class GatedMixer --inputs "[(2, 8, 16), (2, 8, 16)]"
"""

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width * 2)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width * 2, width)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


class DeepMLP(nn.Module):
    """flatten -> Linear(32, 64) -> 3 residual blocks -> scale -> Linear(64, 10)."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.proj = nn.Linear(32, 64)
        self.blocks = nn.Sequential(*(ResidualBlock(64) for _ in range(3)))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        h = torch.relu(self.proj(self.flatten(x)))
        h = self.blocks(h) * 0.5
        return self.head(h)


class GatedMixer(nn.Module):
    """Two inputs; a gate multiplies them, a token-mixing matmul, then a reshape and a head."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(16, 16)
        self.mix = nn.Parameter(torch.randn(8, 8) * 0.1)
        self.head = nn.Linear(8 * 16, 4)

    def forward(self, x, y):
        g = torch.relu(self.gate(x)) * y
        mixed = torch.matmul(self.mix, g) + g
        return self.head(mixed.reshape(mixed.size(0), -1))
