"""A model using an op the stand-in does not lower (softmax): snakegrinder must fail with
``FAILED: Softmax is not supported`` and exit 1, never emit a fake.

    --class SoftmaxClassifier --inputs '[(1, 8)]'
"""

from torch import nn


class SoftmaxClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        return self.softmax(self.fc(x))
