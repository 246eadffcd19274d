"""RQ-VAE semantic IDs as in TIGER (Rajput et al., NeurIPS 2023, Sec. 3.1 and App.).

An MLP encoder maps the content embedding to a latent z (E -> 512 -> 256 -> 128 -> 32, ReLU), L residual
codebooks (K x 32 each) quantize z level by level, and a mirrored MLP decoder reconstructs the embedding.
Loss = ||x - x_hat||^2 + sum_l ||sg[r_l] - e_l||^2 + beta ||r_l - sg[e_l]||^2 with beta = 0.25, gradients
passed through the quantizer straight-through (van den Oord et al., VQ-VAE 2017).

Codebook collapse is the known failure of this model, so (as TIGER does) each codebook is initialised by
k-means on the latent residuals of the whole catalogue, and codes that no item used during an epoch are
re-seeded from current residuals of that level (dead-code reset, as in Jukebox / SoundStream). A reset after
the last epoch seeds each dead code with a residual the final encoding produces, so that item takes it.
"""
from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from .base import Tokenizer
from .kmeans import assign, sq_dists
from .residual import fit_residual_kmeans, residual_loop

log = logging.getLogger(__name__)


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, hidden_dims: list[int], latent_dim: int, num_levels: int, codebook_size: int,
                 beta: float = 0.25, dropout: float = 0.0):
        super().__init__()
        self.beta = beta
        self.encoder = _mlp([in_dim, *hidden_dims, latent_dim], dropout)
        self.decoder = _mlp([latent_dim, *reversed(hidden_dims), in_dim], dropout)
        self.codebooks = nn.Parameter(torch.randn(num_levels, codebook_size, latent_dim) / math.sqrt(latent_dim))

    def quantize(self, z: torch.Tensor):
        """Residual-quantize latents z (N, D). Returns codes (N, L), z_q (N, D), codebook+commitment loss,
        residuals (list of L (N, D))."""
        loss = z.new_zeros(())

        def nearest(r: torch.Tensor, level: int):
            nonlocal loss
            book = self.codebooks[level]
            idx = sq_dists(r.detach(), book.detach()).argmin(1)
            e = book[idx]
            loss = loss + F.mse_loss(e, r.detach()) + self.beta * F.mse_loss(r, e.detach())
            return idx, e

        codes, vectors, residuals = residual_loop(z, self.codebooks.shape[0], nearest)
        return codes, torch.stack(vectors).sum(0), loss, residuals

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)
        codes, zq, q_loss, residuals = self.quantize(z)
        zq = z + (zq - z).detach()  # straight-through
        recon = self.decoder(zq)
        return recon, F.mse_loss(recon, x), q_loss, codes, residuals


class RQVAETokenizer(Tokenizer):
    kind = "rqvae"

    def __init__(self, num_levels: int = 3, codebook_size: int = 256, seed: int = 0, hidden_dims=(512, 256, 128),
                 latent_dim: int = 32, beta: float = 0.25, epochs: int = 50, batch_size: int = 1024,
                 lr: float = 1e-3, weight_decay: float = 0.0, kmeans_init: bool = True, kmeans_iters: int = 20,
                 dead_code_reset: bool = True, reset_every: int = 1, reset_until: float = 1.0,
                 dropout: float = 0.0, device: str = "cpu"):
        super().__init__(num_levels, codebook_size, seed)
        self.hp = dict(hidden_dims=list(hidden_dims), latent_dim=latent_dim, beta=beta, epochs=epochs,
                       batch_size=batch_size, lr=lr, weight_decay=weight_decay, kmeans_init=kmeans_init,
                       kmeans_iters=kmeans_iters, dead_code_reset=dead_code_reset, reset_every=reset_every,
                       reset_until=reset_until, dropout=dropout, device=device)
        self.config.update(self.hp)
        self.model: RQVAE | None = None
        self.in_dim = 0
        self.mean = torch.zeros(0)  # (E,) input centre
        self.scale = torch.ones(())  # input scale: inputs are standardised so the MLP sees unit-variance values
        self.history: list[dict] = []  # per-epoch losses and dead-code counts

    def _device(self) -> torch.device:
        dev = self.hp["device"]
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(dev)

    def _build(self, in_dim: int) -> RQVAE:
        hp = self.hp
        self.in_dim = in_dim
        return RQVAE(in_dim, hp["hidden_dims"], hp["latent_dim"], self.num_levels, self.codebook_size,
                     hp["beta"], hp["dropout"])

    @torch.no_grad()
    def _reset_dead(self, model: RQVAE, x: torch.Tensor, gen: torch.Generator) -> list[int]:
        """Re-seed each level's unused codes with residuals of randomly chosen items at that level.

        Levels are visited in order and each level re-assigns after its reset, so level l+1 sees the
        residuals the final encoder will see.
        """
        dead_counts: list[int] = []
        books = model.codebooks.data

        def reset_level(r: torch.Tensor, level: int):
            idx = assign(r, books[level])
            dead = (torch.bincount(idx, minlength=self.codebook_size) == 0).nonzero().squeeze(1)
            dead_counts.append(len(dead))
            if len(dead):
                pick = torch.randperm(len(r), generator=gen)[: len(dead)].to(r.device)
                books[level, dead[: len(pick)]] = r[pick]
                idx = assign(r, books[level])
            return idx, books[level][idx]

        residual_loop(model.encoder(x), self.num_levels, reset_level)
        return dead_counts

    def fit(self, emb: torch.Tensor) -> "RQVAETokenizer":
        hp = self.hp
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        dev = self._device()
        x = self._check_emb(emb)
        # L2-normalised sentence embeddings have per-dimension std ~ 1/sqrt(E); standardising keeps the latent
        # (and so the k-means codebook initialisation) on a useful scale from the first step.
        self.mean = x.mean(0)
        self.scale = (x - self.mean).pow(2).mean().sqrt().clamp_min(1e-8)
        x = self._standardize(x).to(dev)
        model = self._build(x.shape[1]).to(dev)
        if hp["kmeans_init"]:
            with torch.no_grad():
                z = model.encoder(x).cpu()
                books = fit_residual_kmeans(z, self.num_levels, self.codebook_size, hp["kmeans_iters"], self.seed)
                model.codebooks.data.copy_(torch.stack(books).to(dev))
        opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        n, bs = len(x), min(hp["batch_size"], len(x))
        last_reset = int(hp["epochs"] * hp["reset_until"])
        self.history = []
        start_time = time.time()
        for epoch in range(hp["epochs"]):
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            tot = rec_tot = 0.0
            for start in range(0, n, bs):
                xb = x[perm[start : start + bs]]
                _, rec, q_loss, _, _ = model(xb)
                loss = rec + q_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(xb)
                rec_tot += float(rec.detach()) * len(xb)
            row = {"epoch": epoch, "loss": tot / n, "recon": rec_tot / n}
            if hp["dead_code_reset"] and epoch < last_reset and (epoch + 1) % hp["reset_every"] == 0:
                model.eval()
                row["dead"] = self._reset_dead(model, x, gen)
            self.history.append(row)
            if (epoch + 1) % max(1, hp["epochs"] // 10) == 0:
                log.info("rqvae epoch %d/%d loss %.5f recon %.5f dead %s (%.0f s)", epoch + 1, hp["epochs"],
                         row["loss"], row["recon"], row.get("dead"), time.time() - start_time)
        self.model = model.eval().cpu()
        self.fitted = True
        return self

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    @torch.no_grad()
    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self.model.quantize(self.model.encoder(self._standardize(self._check_emb(emb))))[0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        codes = codes.long().cpu()
        zq = sum(self.model.codebooks[l][codes[:, l]] for l in range(self.num_levels))
        return self.model.decoder(zq) * self.scale + self.mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"in_dim": torch.tensor(self.in_dim), "mean": self.mean, "scale": self.scale, **{f"model.{k}": v for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model = self._build(int(state["in_dim"])).eval()
        self.mean, self.scale = state["mean"], state["scale"]
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})


__all__ = ["RQVAE", "RQVAETokenizer"]
