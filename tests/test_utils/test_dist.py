"""Process-group start and end helpers of the tools."""
import torch.distributed as dist

from mmsfr.utils.dist import close_dist, init_cpu_dist


def test_close_dist_destroys_a_live_group(tmp_path):
    assert not dist.is_initialized()
    assert close_dist() is False  # nothing to close
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                            world_size=1)
    try:
        assert init_cpu_dist('pytorch') is False  # a live group is kept, not replaced
        assert close_dist() is True
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_init_cpu_dist_only_for_the_pytorch_launcher():
    for launcher in ('none', 'slurm', 'mpi'):
        assert init_cpu_dist(launcher) is False
    assert not dist.is_initialized()
