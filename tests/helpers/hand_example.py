"""The worked example of docs/CONVENTIONS.md shared by the core tests: three rows of r = 4, eps = 1, D = {3}."""

from __future__ import annotations

import math

import torch

# Three rows of r = 4 worked by hand (eps = 1, D = {3}):
#   [0,0,0,10]: h^ = e_3, mu = .25, sigma = .433, threshold .683 -> L = {3}, Q = 1 - .25 = .75
#   [1,1,1,3]:  h^ = [1,1,1,3]/sqrt(12), mu = 1.5/sqrt(12), L = {3}, Q = 1.5/sqrt(12)
#   [1,1,1,2]:  h^ = [1,1,1,2]/sqrt(7),  mu = 1.25/sqrt(7), L = {3}, Q = .75/sqrt(7)
HAND = torch.tensor([[0.0, 0.0, 0.0, 10.0], [1.0, 1.0, 1.0, 3.0], [1.0, 1.0, 1.0, 2.0]])
HAND_Q = torch.tensor([0.75, 1.5 / math.sqrt(12), 0.75 / math.sqrt(7)])
D3 = torch.tensor([False, False, False, True])
