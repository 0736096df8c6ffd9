# %% [markdown]
# # Your own model and data: the netperturb API
#
# netperturb perturbs the weights of **any PyTorch classifier** on **any data** from a
# notebook, with the same engine, exact seeded draws and SDC metrics as the workflow's
# studies. Here the classifier is `MyNet`, a plain `nn.Module` of `examples/mynet.py`
# (two convolutions, two dense layers), and the data are scikit-learn's handwritten digits
# (8 x 8 pixels, 10 classes) in a `DataLoader`. Every step is one call of the public API
# (`import netperturb as npt`):
#
# 1. `npt.layer_table(model)`: which layers can be perturbed;
# 2. `npt.perturbed(...)` + `npt.evaluate(...)`: bit flips at one bit error rate in one
#    layer, top-1 accuracy and SDC (silent data corruption: the share of the images the
#    fault-free network gets right whose top-1 prediction changes);
# 3. `npt.in_format(...)`: faults in int8-stored weights act on the int8 network;
# 4. `npt.run_grid(...)` and `npt.plot_grid(...)`: a grid of layers x perturbations x levels
#    x repeats as a table, and its figure.

# %% tags=["parameters"]
# Parameters (papermill can inject others after this cell)
out_dir = "."  # where the grid table, the figure and a summary are written
epochs = 10  # training epochs of the stand-in for "your trained model"
rate = 1e-3  # bit error rate of the single perturbed network

# %%
import json
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import netperturb as npt
from mynet import make_mynet

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Your model and your data
#
# A trained classifier of yours would be loaded here (`model.load_state_dict(torch.load(...))`);
# this notebook trains `MyNet` for a few epochs on 70% of the digits instead. The evaluation
# data is a `DataLoader` over the other 30%: float images in [0, 1] (already transformed for the
# model), integer labels, no shuffling (the clean and the perturbed network must see the same
# images in the same order). netperturb reads it batch by batch; it never needs to fit in memory.

# %%
torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8) in [0, 1]
y = torch.tensor(digits.target)
order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
train, test = order[:1257], order[1257:]

model = make_mynet(num_classes=10, in_channels=1)
optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
for epoch in range(epochs):
    model.train()
    for i in range(0, len(train), 64):
        batch = train[i : i + 64]
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimiser.step()
model.eval()
loader = DataLoader(TensorDataset(x[test], y[test]), batch_size=128)

# %% [markdown]
# ## Which layers can be perturbed
#
# Every `Conv2d` and `Linear` layer, by module path (what the tables key on) and label
# (`conv1 ..`, then `fc..`, as in Cheney et al. 2017); `share` is the layer's share of all the
# model's parameters.

# %%
npt.layer_table(model)

# %% [markdown]
# ## One perturbed network: bit flips in one layer
#
# `npt.perturbed` applies one perturbation to the model's own weights for the duration of the
# `with` block and restores them bit for bit afterwards. Bit flips at bit error rate `rate`:
# exactly floor(rate x 32 x weights) of the layer's stored fp32 bits flip, chosen from the seed.
# The clean evaluation is the fault-free reference the SDC counts compare with.

# %%
clean = npt.evaluate(model, loader)
with npt.perturbed(model, "conv2", "bit_flip", rate, seed=7) as applied:
    hit = npt.evaluate(model, loader, reference=clean)
print(f"clean network: top-1 {clean.top1:.3f} on {clean.n_images} images")
print(f"bit flips at rate {rate:g} in conv2 ({applied.changed['weight']} of {applied.layer.n_params - applied.layer.n_out} "
      f"weights changed): top-1 {hit.top1:.3f}, SDC-1 {hit.sdc1:.3f}, DUE {hit.due:.3f}")

# %% [markdown]
# ## Faults in int8 weights
#
# A bit flip in an int8-stored weight flips a bit of its 8-bit code. `MyNet` is stored in fp32,
# so asking for `format="int8"` on it is refused (it would first change every weight to its
# int8 value, at any rate): `npt.in_format` gives the network stored in int8, which is the
# fault-free reference of such faults.

# %%
format_error = ""
try:
    with npt.perturbed(model, "conv2", "bit_flip", rate, seed=7, format="int8"):
        pass
except npt.FormatError as error:
    format_error = str(error)
    print("FormatError:", format_error)

int8 = npt.in_format(model, "int8")
clean8 = npt.evaluate(int8, loader)
with npt.perturbed(int8, "conv2", "bit_flip", rate, seed=7, format="int8"):
    hit8 = npt.evaluate(int8, loader, reference=clean8)
print(f"int8 network: top-1 {clean8.top1:.3f}; bit flips at rate {rate:g} in conv2: "
      f"top-1 {hit8.top1:.3f}, SDC-1 {hit8.sdc1:.3f}")

# %% [markdown]
# ## A grid: every layer, two perturbations, several levels and repeats
#
# `npt.run_grid` computes what the workflow's perturbation jobs compute (the clean network
# below the layer once per batch, several perturbed copies per pass above it) and returns
# the workflow's tidy table: one row per cell, with the cell's seed. Level 0 is the clean
# network.

# %%
grid = npt.run_grid(
    model, loader, layers="all", repeats=3, seed=2017, model_name="mynet",
    perturbations={
        "bit_flip": {"levels": [0, 1e-4, 3e-4, 1e-3, 3e-3]},
        "synapse_knockout": {"levels": [0, 0.25, 0.5, 0.75, 1.0]},
    },
)  # fmt: skip
grid.to_csv(out / "grid.csv", index=False)
grid[["layer_label", "perturbation", "level", "repeat", "seed", "top1", "sdc1", "due"]].head(8)

# %% [markdown]
# Each row's seed rebuilds its network: `npt.perturbed` with that seed gives the row's numbers.

# %%
row = grid.query("layer_label == 'conv2' and perturbation == 'bit_flip' and level == 1e-3 and repeat == 1").iloc[0]
with npt.perturbed(model, row.layer, row.perturbation, row.level, seed=row.seed):
    again = npt.evaluate(model, loader, reference=clean)
print(f"row: top-1 {row.top1:.4f}, SDC-1 {row.sdc1:.4f}; rebuilt: top-1 {again.top1:.4f}, SDC-1 {again.sdc1:.4f}")

# %% [markdown]
# ## The figure
#
# Top-1 accuracy against level, one line per layer, mean +- s.e.m. over the repeats.

# %%
fig = npt.plot_grid(grid, "top1", baseline=clean.top1, chance=0.1)
fig.savefig(out / "grid_top1.png", dpi=100, bbox_inches="tight")

# %%
summary = {
    "clean": clean.as_dict(), "bit_flip": hit.as_dict(), "changed": applied.changed, "int8_clean": clean8.as_dict(),
    "int8_bit_flip": hit8.as_dict(), "format_error": format_error,
    "row": {"layer": row.layer, "level": row.level, "repeat": int(row["repeat"]), "seed": int(row.seed)},
    "rebuilt": again.as_dict(),
}  # fmt: skip
(out / "summary.json").write_text(json.dumps(summary, indent=1))
