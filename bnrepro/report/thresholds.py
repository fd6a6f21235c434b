"""Every number a verdict or a "stalled"/"diverged" label turns on, in one place, with why it has its value.

The claims and tables import these; the report's captions print them, so a reader sees the bar a run set
was held to. Figure scales (the paper's y ranges) are drawing choices and live in draw.py instead.
"""

from __future__ import annotations

# Fig. 1(b, c): BN's activation-input distribution counts as "stable" when its drift (of the median, and of
# the outer percentiles' spread) is at most this fraction of the baseline's; a clear difference, not any
# difference, since two short runs never drift by exactly the same amount.
STABLE_RATIO = 0.5

# A run that completed without diverging but never rose above this test accuracy learned nothing: on a
# ten-class test set chance is 10% and always answering the most common class at most ~11% (11.35% on
# MNIST), while any network that learns at all passes 20% within its first evaluations. The same line says
# whether a network has left chance when the default init is chosen (scripts/select_defaults.py).
STALL_ACC = 0.2

# Every claim that contrasts two groups of runs (BN vs no BN, BN-x30 vs BN-x5) is judged on the interval of the
# difference of their seed means at this confidence: Welch's t-interval (unequal variances, Welch-Satterthwaite
# degrees of freedom). A claim is "reproduced" only when the whole interval lies on the paper's side of zero,
# "inconclusive" when it contains zero: three seeds cannot tell such a gap from seed-to-seed noise.
CONFIDENCE = 0.95

# Sec. 3.3's scale invariance, measured on trained networks (bnrepro/report/scale_invariance.py): with BN the
# layer's output, the gradient reaching the layer's input and a times the gradient of the scaled weight a*W must
# equal their values at scale 1 to this relative tolerance. float32 rounding gives ~1e-6, and BN's eps breaks the
# identity by about eps / (2 a^2 var) of a unit's batch variance var: up to ~1e-4 for this MLP's untrained layers
# at a = 0.5. A layer that does not normalise misses by order one, so 1e-3 lies well clear of both.
SCALE_TOLERANCE = 1e-3

# Two accuracies closer than this are a tie: test accuracy moves in steps of 1/(test images), 1e-4 for a
# 10k test set, so any smaller gap is float32 rounding in the evaluation, not a difference between runs.
FLOAT_TIE = 1e-7

# A seed-mean accuracy "reaches" a target this close below it: the target is itself a seed mean of the
# same values, summed in another order, so it can differ from them in the last bits.
REACH_TOLERANCE = 1e-12

# Fig. 1(a)'s "BN trains faster" compares the two curves at the first evaluation at or after this fraction
# of training: early enough that both have not yet converged, late enough to be past step 0's chance level.
EARLY_FRACTION = 0.2

# Sec. 4.2's learning-rate multiples (BN-x5, BN-x30): without BN the paper diverged from 5x the base lr on,
# with BN it trained up to 30x; the divergence claims look at exactly this range.
HIGH_LR_FROM = 5
HIGH_LR_TO = 30

# Two config floats this close (relative) are one setting: 3 * 0.1 != 0.3 in binary, and an lr written as
# a multiple of the base lr must still match the run that used it.
SAME_VALUE_REL_TOL = 1e-9

# Gradients at initialisation (experiment=init_gradients): a network's per-layer gradient norms count as level across
# layers when the interval of their growth rate per layer lies within [1/LEVEL_RATE, LEVEL_RATE]. Yang et al. (2019)
# predict BN's rate with ReLU as pi / (pi - 1) ~ 1.47 a layer; 1.05 is an eighth of that in log terms, and changes a
# gradient by at most 1.05^50 ~ 11x over this study's deepest network, where BN's rate would change it ~2e8x.
LEVEL_RATE = 1.05

# "Trains as well as BN" (Santurkar et al. 2018: noisy BN, lp normalisation) is a claim of no loss, not of no
# difference: it holds when the Welch interval (CONFIDENCE) of (variant - BN) in test accuracy lies wholly above
# -AS_WELL_MARGIN, fails when it lies wholly below. Half a point of MNIST test accuracy: above the seed noise of this
# project's MLP runs (a 3-seed Welch interval of two configurations spans about +-0.3 points at the median seed
# spread), so two equal configurations can pass; about what a real handicap costs (a 5x or 10x lower learning rate
# than the default costs the network without BN 0.2 and 0.4 points at 50k steps, reports/selection).
AS_WELL_MARGIN = 0.005

# Santurkar et al. 2018's landscape claims (experiment=landscape): BN's gradient predictiveness, effective
# beta-smoothness and loss variation count as "smaller" only when each run's value (its median over the probed
# steps) is below this fraction of the network without BN's, the CONFIDENCE Welch interval of log10(BN) -
# log10(no BN) wholly below log10 of it: the paper reports gaps of up to two orders of magnitude, so a factor of 2
# asks for a clear difference, not any difference (as STABLE_RATIO does for Figure 1(b, c)).
SMOOTHER_RATIO = 0.5
