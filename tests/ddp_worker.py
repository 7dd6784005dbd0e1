"""Run under `torchrun --nproc_per_node 2` by tests/test_distributed.py: a few data-parallel steps of the
StyleGAN2 trainer and the encoder trainer on tiny networks; process 0 writes what every process saw."""
import json
import sys

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import tiny_discriminator, tiny_generator  # noqa: E402
from ganinv.train import distributed  # noqa: E402
from ganinv.train.encoder_trainer import EncoderTrainConfig, EncoderTrainer  # noqa: E402
from ganinv.train.trainer import TrainConfig, Trainer, TrainingData  # noqa: E402


def checksums(*modules) -> list[float]:
    return [float(sum(t.detach().double().sum() for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()))
            for m in modules]


def main(out: str) -> None:
    torch.set_num_threads(1)
    distributed.init_from_environment(torch.device("cpu"))
    images = (np.random.RandomState(0).rand(32, 16, 16, 3) * 255).astype(np.uint8)
    config = TrainConfig(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16, batch_size=8,
                         snapshot_kimg=1000, grid_size=4, r1_interval=2, pl_weight=2.0, pl_interval=2)
    trainer = Trainer(config, TrainingData(images))
    losses = [trainer.step() for _ in range(3)]
    enc = EncoderTrainer(EncoderTrainConfig(batch_real=0, batch_generated=4, iterations=2, num_eval=0,
                                            progressive_start=0, progressive_every=1),
                         tiny_generator(), tiny_discriminator())
    enc_losses = [enc.step() for _ in range(2)]
    mine = torch.tensor(checksums(trainer.G, trainer.D, trainer.G_ema, enc.encoder, enc.latent_d), dtype=torch.float64)
    gathered = [torch.zeros_like(mine) for _ in range(distributed.world_size())]
    dist.all_gather(gathered, mine)
    batch_first = torch.tensor([float(trainer.images[trainer.order[0]].float().mean())])
    firsts = [torch.zeros_like(batch_first) for _ in range(distributed.world_size())]
    dist.all_gather(firsts, batch_first)
    if distributed.is_main():
        with open(out, "w") as f:
            json.dump({"world_size": distributed.world_size(), "checksums": [g.tolist() for g in gathered],
                       "losses": [[float(v) for v in step.values()] for step in losses + enc_losses],
                       "kimg": trainer.kimg, "local_batch": trainer.local_batch,
                       "first_image_means": [float(v) for v in firsts]}, f)
    distributed.shutdown()
    distributed.exit_worker(0)


if __name__ == "__main__":
    main(sys.argv[1])
