"""SimpleMLP: the model snakegrinder's --trace-example traces, as a source file to submit.

    warpforge-launch submit --source examples/models/simple_mlp.py --class SimpleMLP \
        --inputs '[(1, 8)]'
"""

from torch import nn


class SimpleMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))
