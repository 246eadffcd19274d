"""Most-popular baseline: cross-entropy on a bias vector converges to log training frequency."""
import torch

from genrec.models.pop import Popularity


def test_pop_learns_log_frequency_and_scores_every_user_alike():
    counts = torch.tensor([1, 7, 3, 0, 12, 5])  # items 1..6
    labels = torch.repeat_interleave(torch.arange(1, 7), counts)
    batch = {"labels": torch.cat([labels, torch.zeros(4, dtype=torch.long)])[None]}  # padding is ignored
    m = Popularity(6)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    for _ in range(400):
        loss = m(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = m.logits.softmax(0)
    seen = counts > 0
    torch.testing.assert_close(probs[seen], counts[seen] / counts.sum(), atol=2e-3, rtol=0)
    scores = m.score({"history": torch.zeros(3, 5, dtype=torch.long)})
    assert scores.shape == (3, 7) and torch.isinf(scores[:, 0]).all()
    assert torch.equal(scores[0], scores[2])
    assert scores[0, 1:].argsort(descending=True)[:4].tolist() == [4, 1, 5, 2]  # items 5, 2, 6, 3 by count
