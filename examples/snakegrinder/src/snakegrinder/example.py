"""The built-in example traced by ``--trace-example``: the real binary's SimpleMLP."""

from torch import nn

from snakegrinder.inputs import InputSpec

INPUTS = (InputSpec((1, 8)),)


class SimpleMLP(nn.Module):
    """Linear(8, 16) -> ReLU -> Linear(16, 4), input randn(1, 8)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))
