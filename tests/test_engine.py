"""The job engine: one cost function and budget for every kind of job, owners, queue bounds, the executor seam."""

import dataclasses
import pickle

import pytest
from PIL import Image

from kolors_app.core.config import Limits, Settings
from kolors_app.core.request import GenerationRequest, InitImage
from kolors_app.core.errors import ValidationError
from kolors_app.core.schema import request_from_dict
from kolors_app.core.validation import validate
from kolors_app.creative import xyz
from kolors_app.engine.cost import CELL_WORK, Budget, check_budget, job_cost
from kolors_app.engine.engine import Engine, EngineLimits, QueueFull
from kolors_app.engine.executors import LocalExecutor
from kolors_app.engine.jobs import (GENERATE, LOCAL_OWNER, PLOT, REST, UPSCALE, Job, JobEvent, Owner, PlotSpec,
                                   UpscaleSpec)
from kolors_app.serving.quotas import engine_limits

PUBLIC = engine_limits(Settings(share=True)).budget
LOCAL = engine_limits(Settings()).budget
ALICE, BOB = Owner("user", "alice", "10.0.0.1"), Owner("user", "bob", "10.0.0.2")


def t2i(**values) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a fox", "seed": 1, **values})


def hires(request: GenerationRequest, upscale: float, steps: int = 0, strength: float = 0.45):
    return request_from_dict({**request.to_dict(), "hires_upscale": upscale, "hires_steps": steps,
                              "hires_upscaler": "Latent", "hires_denoising_strength": strength})


def checked(request: GenerationRequest) -> GenerationRequest:
    return validate(request, Limits())  # what the engine costs: validated requests


def generation(*requests) -> Job:
    return Job(GENERATE, LOCAL_OWNER, REST, [checked(request) for request in requests])


def plot_job(base: GenerationRequest, axes) -> Job:
    cells = xyz.plan_cells(base.to_dict(), axes)
    return Job(PLOT, LOCAL_OWNER, REST, [checked(request_from_dict(cell.params)) for cell in cells],
               plot=PlotSpec(cells, axes))


def refusal(job: Job, budget: Budget) -> ValidationError | None:
    try:
        check_budget(job_cost(job), budget)
    except ValidationError as error:
        return error
    return None


@pytest.mark.parametrize("job", [
    generation(t2i(width=1024, height=1024, num_inference_steps=50)),
    generation(t2i(width=1024, height=1024, num_inference_steps=25, num_images=4)),
    generation(hires(t2i(width=1024, height=1024, num_inference_steps=20), 1.5)),
    plot_job(t2i(width=512, height=512, num_inference_steps=20),
             [xyz.Axis("seed", [1, 2, 3]), xyz.Axis("guidance", [4.0, 5.0, 6.0])]),
    Job(UPSCALE, LOCAL_OWNER, REST, upscale=UpscaleSpec(Image.new("RGB", (1024, 1024)), "Lanczos", 2.0)),
], ids=["1024px-50-steps", "batch-4-25-steps", "hires-1.5x-20-steps", "plot-3x3-512px", "upscale-2x-1024px"])
def test_what_a_public_server_still_accepts(job):
    assert refusal(job, PUBLIC) is None


def test_the_hires_pass_counts_its_pixels_steps_and_strength():
    # Found: a 2x hires pass at 150 steps counted 294 megapixel-steps and ran 2,810.
    request = hires(t2i(width=1024, height=1024, num_inference_steps=150), 2.0)
    cost = job_cost(generation(request))
    assert cost.work == pytest.approx(150 + 4 * 150 * 0.45)
    error = refusal(generation(request), PUBLIC)
    assert error.field == "hires_steps" and error.code == "over_budget" and error.allowed == {"max": 300.0}


def test_iterations_are_one_job():
    # Found: A1111's n_iter checked each iteration alone (2048x2048 x 71 steps x 8 iterations accepted).
    one = t2i(width=2048, height=2048, num_inference_steps=71)
    assert refusal(generation(one), PUBLIC) is None
    error = refusal(generation(*[one] * 8), PUBLIC)
    assert error.field == "n_iter" and error.code == "over_budget"


def test_every_plot_cell_has_a_fixed_cost():
    # Found: a 16x16x16 plot of 1-step cells was accepted (139 minutes of the only slot on a CPU).
    axes = [xyz.Axis("seed", list(range(16))), xyz.Axis("steps", [1] * 16), xyz.Axis("guidance", [5.0] * 16)]
    job = plot_job(t2i(width=256, height=256, num_inference_steps=1), axes)
    assert job_cost(job).work == pytest.approx(4096 * (1 / 16 + CELL_WORK))
    for budget in (PUBLIC, LOCAL):
        error = refusal(job, budget)
        assert error.field == "x_values" and error.code == "over_budget"


def test_the_output_cap_bounds_pixels_whatever_the_steps():
    # Found: 2048x2048 x 8 images at 1 step is 33 megapixel-steps, accepted, and peaked above 6 GB.
    error = refusal(generation(t2i(width=2048, height=2048, num_inference_steps=1, num_images=8)), PUBLIC)
    assert error.field == "num_images" and error.code == "over_output_cap" and error.allowed == {"max": 16.0}
    # Found: a 16 MP upload at 4x made a 256 MP, 369 MB PNG.
    upscale = Job(UPSCALE, LOCAL_OWNER, REST, upscale=UpscaleSpec(Image.new("RGB", (4096, 4096)), "Lanczos", 4.0))
    for budget in (PUBLIC, LOCAL):
        assert refusal(upscale, budget).field == "upscale_factor"


def test_an_init_image_counts_the_steps_that_run():
    image = Image.new("RGB", (1024, 1024))
    full = job_cost(generation(t2i(num_inference_steps=100))).work
    part = job_cost(generation(t2i(num_inference_steps=100, init=InitImage(image, 0.3)))).work
    assert part == pytest.approx(full * 0.3)


def test_jobs_and_events_are_plain_data():
    # The executor seam: what crosses it must survive a trip to another process.
    image = Image.new("RGB", (32, 32), "red")
    axes = [xyz.Axis("seed", [1, 2])]
    cells = xyz.plan_cells(t2i(width=256, height=256).to_dict(), axes)
    requests = [checked(dataclasses.replace(request_from_dict(cell.params), init=InitImage(image, 0.5)))
                for cell in cells]
    job = Job(PLOT, LOCAL_OWNER, REST, requests, plot=PlotSpec(cells, axes))
    again = pickle.loads(pickle.dumps(job))
    assert again.requests[0].init.image.tobytes() == image.tobytes() and again.plot.cells[1].params["seed"] == 2
    event = pickle.loads(pickle.dumps(JobEvent("preview", 3, 10, image=image)))
    assert (event.kind, event.step, event.image.size) == ("preview", 3, (32, 32))


@pytest.fixture
def engine(manager):
    limits = EngineLimits(Budget(1e9, 1e9), queue_size=3, per_owner=2, per_address=0)
    return Engine(manager, LocalExecutor(manager), limits)


def small(**values) -> GenerationRequest:
    return t2i(**{"width": 256, "height": 256, "num_inference_steps": 2, **values})


def test_the_engine_validates_before_any_work(engine):
    with pytest.raises(ValidationError, match="width: must be a multiple of 8"):
        engine.submit(Job(GENERATE, ALICE, REST, [small(width=260)]))
    assert engine.queued() == 0


def test_owners_see_and_stop_only_their_own_jobs(engine, manager):
    with manager.run_lock:  # holds the slot: both jobs wait
        mine = engine.submit(Job(GENERATE, ALICE, REST, [small(num_inference_steps=3)]))
        theirs = engine.submit(Job(GENERATE, BOB, REST, [small(seed=2)]))
        assert engine.current(ALICE) is mine and engine.current(BOB) is theirs
        engine.stop(BOB)
    assert theirs.result().stopped and not theirs.result().images
    outcome = mine.result()
    assert not outcome.stopped and outcome.images[0].image.size == (256, 256)


def test_quotas_per_owner_and_in_all(engine, manager):
    with manager.run_lock:
        handles = [engine.submit(Job(GENERATE, ALICE, REST, [small()])) for _ in range(2)]
        with pytest.raises(QueueFull, match="at most 2 at a time"):
            engine.submit(Job(GENERATE, ALICE, REST, [small()]))
        handles.append(engine.submit(Job(GENERATE, BOB, REST, [small()])))
        with pytest.raises(QueueFull, match="Queue is full"):
            engine.submit(Job(GENERATE, Owner("user", "carol", "10.0.0.3"), REST, [small()]))
        for owner in (ALICE, BOB):
            engine.stop(owner)
    assert all(handle.result().stopped for handle in handles)
    assert engine.queued() == 0


def test_a_stop_before_the_job_arrives_reaches_it(engine):
    engine.expect(ALICE)  # the page's click, its job still in gradio's queue
    engine.stop(ALICE)
    handle = engine.submit(Job(GENERATE, ALICE, REST, [small()]))
    assert handle.result().stopped


def run_until(handle, index: int, action) -> list:
    """Follow the job's events; at its first step of iteration `index`, call action(handle)."""
    seen, acted = [], False
    for event in handle.events():
        seen.append(event.kind)
        if event.kind == "progress" and event.index == index and not acted:
            action(handle)
            acted = True
    return seen


def test_skip_ends_one_iteration_and_interrupt_keeps_the_finished_ones(engine):
    iterations = [small(seed=seed, num_inference_steps=4) for seed in (1, 2, 3)]
    skipped = engine.submit(Job(GENERATE, ALICE, REST, iterations))
    seen = run_until(skipped, 0, lambda handle: handle.skip())
    assert seen[0] == "queued" and seen[-1] == "done"
    assert [item.seed for item in skipped.outcome.images] == [2, 3]

    interrupted = engine.submit(Job(GENERATE, ALICE, REST, iterations))
    run_until(interrupted, 1, lambda handle: engine.stop(ALICE))
    outcome = interrupted.outcome
    assert outcome.interrupted and not outcome.stopped and [item.seed for item in outcome.images] == [1]
