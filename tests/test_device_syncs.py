"""Host syncs in the diffusion's hot paths, counted without a GPU.

Reading a CUDA tensor's value on the host (``int(t.max())``, ``.item()``, ``.tolist()``, ``bool(...)``) waits for
every queued kernel: a device sync. ``GaussianDiffusion._check`` used to read ``t.min()`` and ``t.max()`` at every
call (12 reads per training step with a learned variance); now it checks the range only for CPU tensors, where it
costs nothing and keeps its error message.

The tests run the real code on *fake* CUDA tensors (``torch._subclasses.FakeTensorMode``: shapes, dtypes and devices,
no data, no GPU needed) under a dispatch mode that counts every operation that would sync on a real GPU: reads of a
value (``aten._local_scalar_dense``, behind ``int``, ``float``, ``bool``, ``.item()``) and copies from the device to
the host. It answers each read with 0 instead of failing, so old code runs to the end and is counted too.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ddpm_lite import GaussianDiffusion, get_betas, respace
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.dpm_solver import dpm_solver_sample_loop
from ddpm_lite.models import UNetModel

aten = torch.ops.aten


class SyncCounter(TorchDispatchMode):
    """Counts operations that would make the host wait for a GPU: value reads and device -> host copies; also
    host -> device copies (with non_blocking=False, PyTorch completes them with a stream synchronize)."""

    def __init__(self):
        super().__init__()
        self.reads, self.to_host, self.to_device = [], 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            self.reads.append(tuple(args[0].shape))
            return 0
        out = func(*args, **kwargs)
        if func in (aten._to_copy.default, aten.copy_.default):
            src = args[1] if func is aten.copy_.default else args[0]
            dst = args[0] if func is aten.copy_.default else out
            if src.device.type != "cpu" and dst.device.type == "cpu":
                self.to_host += 1
            if src.device.type == "cpu" and dst.device.type != "cpu" and not kwargs.get("non_blocking", False):
                self.to_device += 1
        return out

    @property
    def syncs(self) -> int:
        return len(self.reads) + self.to_host


@pytest.fixture
def fake_cuda():
    """A FakeTensorMode in which tensors can live on "cuda" (skips where this torch cannot fake it)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    try:
        with mode:
            torch.zeros(1, device="cuda")
    except Exception as error:  # noqa: BLE001 - any failure means: no fake CUDA here
        pytest.skip(f"this torch cannot fake CUDA tensors: {error}")
    return mode


def shipped_setup(mode, batch=16):
    """The shipped digits model's configuration (U-Net, cosine, learned variance, hybrid loss) on fake CUDA."""
    config = ExperimentConfig.preset("digits")
    diffusion = config.build_diffusion()
    with mode, torch.device("cuda"):
        model = UNetModel(config.model)
        x = torch.randn(batch, 1, 8, 8)
        t = torch.randint(0, diffusion.num_timesteps, (batch,))
        noise = torch.randn(batch, 1, 8, 8)
    return diffusion, model, x, t, noise


@pytest.mark.parametrize("loss_type", ["simple", "rescaled_mse", "kl"])
def test_a_cuda_training_step_reads_nothing_back(fake_cuda, loss_type):
    diffusion, model, x, t, noise = shipped_setup(fake_cuda)
    diffusion = GaussianDiffusion(diffusion.betas, diffusion.mean_type, diffusion.var_type, loss_type)
    assert diffusion.learns_sigma
    counter = SyncCounter()
    with fake_cuda, counter:
        losses = diffusion.training_losses(model, x, t, noise=noise)
        losses["loss"].mean()
    assert losses["loss"].device.type == "cuda"
    assert counter.syncs == 0, f"{len(counter.reads)} value reads {counter.reads}, {counter.to_host} copies to host"


def test_cuda_sampling_steps_read_nothing_back(fake_cuda):
    diffusion, model, x, t, _ = shipped_setup(fake_cuda, batch=4)
    spaced = respace(diffusion, 10)
    counter = SyncCounter()
    with fake_cuda, counter:
        diffusion.p_sample(model, x, t)
        diffusion.ddim_sample(model, x, t)
        spaced.p_sample(model, x, torch.full((4,), 3, device="cuda"))
        dpm_solver_sample_loop(diffusion, model, (4, 1, 8, 8), 3, noise=x)
    assert counter.syncs == 0, f"{len(counter.reads)} value reads, {counter.to_host} copies to host"


def test_a_cuda_training_step_copies_nothing_to_the_device_after_the_first(fake_cuda):
    """A copy from host memory to a GPU blocks (PyTorch ends it with a stream synchronize): the schedule tables go
    to the device once, at the first step that needs them (one copy per table), and never again."""
    diffusion, model, x, t, noise = shipped_setup(fake_cuda)
    first, second = SyncCounter(), SyncCounter()
    with fake_cuda:
        with first:
            diffusion.training_losses(model, x, t, noise=noise)
        with second:
            diffusion.training_losses(model, x, t, noise=noise)
            diffusion.p_sample(model, x, t)
    tables = {name for name, value in vars(diffusion).items() if hasattr(value, "dtype") and value.ndim == 1}
    assert 0 < first.to_device <= len(tables), f"{first.to_device} copies for {len(tables)} tables"
    assert second.to_device == 0, f"{second.to_device} blocking host->device copies"


def test_the_device_copies_are_the_same_numbers():
    """The cached float32 table on a device is the float64 table rounded: the same lookups as before the cache."""
    diffusion = GaussianDiffusion(get_betas("cosine", 1000), var_type="learned_range")
    t = torch.tensor([0, 1, 500, 999])
    x = torch.zeros(4, 1, 2, 2)
    for _ in range(2):  # the second lookup comes from the cache
        for name in ("sqrt_alphas_cumprod", "log_betas", "large_log_variance", "xprev_coef2"):
            table = getattr(diffusion, name)
            got = diffusion._extract(table, t, x).flatten()
            assert torch.equal(got, torch.from_numpy(table[t.numpy()]).float()), name
    scratch = diffusion.betas * 2  # not a table of the diffusion: looked up, never cached
    assert torch.equal(diffusion._extract(scratch, t, x).flatten(), torch.from_numpy(scratch[t.numpy()]).float())
    assert all(entry[0] is not scratch for entry in diffusion._on_device.values())


def test_the_counter_sees_the_syncs_it_is_meant_to_see(fake_cuda):
    """The old check (int(t.min()), int(t.max())) and a .tolist() are counted: the tests above can fail."""
    _, _, _, t, _ = shipped_setup(fake_cuda)
    counter = SyncCounter()
    with fake_cuda, counter:
        int(t.min()), int(t.max())
        (t * 2).float().cpu()
    assert len(counter.reads) == 2 and counter.to_host == 1


def test_cpu_timesteps_are_still_checked_with_the_same_message():
    diffusion = GaussianDiffusion(get_betas("linear", 100))
    x = torch.randn(3, 1, 4, 4)
    for bad, shown in ((torch.tensor([0, 5, 100]), r"\[0, 100\]"), (torch.tensor([-1, 5, 7]), r"\[-1, 7\]")):
        with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 99\], got values in " + shown):
            diffusion.q_sample(x, bad)
        with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 99\]"):
            diffusion.training_losses(lambda x, t: x, x, bad)


def test_meta_tensors_pass_the_check_without_being_read():
    """A tensor without values (meta device) can no longer trip the range check: it is only read on the CPU."""
    diffusion = GaussianDiffusion(get_betas("linear", 100))
    x = torch.empty(3, 1, 4, 4, device="meta")
    out = diffusion.q_sample(x, torch.empty(3, dtype=torch.long, device="meta"), noise=torch.empty_like(x))
    assert out.device.type == "meta" and out.shape == x.shape
