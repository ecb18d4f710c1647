"""The saved-seconds estimate: observed misses first, then size over throughput, else nothing."""

from __future__ import annotations

import threading

import pytest

from gitsync.observations.model import Evidence, ImageEvidence, Lookup, LookupResult, LookupSource
from gitsync.observations.savings import SavingsEstimator

NGINX = "docker.io/library/nginx:1.27"
REDIS = "docker.io/library/redis:7"
MB = 1_000_000


def hit(image: str, *, seconds: float | None = None, image_bytes: int | None = None) -> Lookup:
    return Lookup(
        image=image,
        result=LookupResult.HIT,
        at=0.0,
        source=LookupSource.POD,
        cache="web",
        seconds=seconds,
        image_bytes=image_bytes,
    )


def miss(image: str, seconds: float | None) -> Lookup:
    return Lookup(
        image=image, result=LookupResult.MISS, at=0.0, source=LookupSource.POD, seconds=seconds
    )


def test_a_hit_saved_the_mean_observed_miss_less_its_own_seconds() -> None:
    evidence = Evidence(
        since=0,
        until=1,
        images=(ImageEvidence(image=NGINX, misses=3, miss_seconds=60.0, timed_misses=2),),
    )
    estimator = SavingsEstimator(pull_bytes_per_second=50 * MB, evidence=evidence)
    assert estimator.miss_seconds(NGINX) == 30.0
    assert estimator.saved_seconds(hit(NGINX, seconds=4.0)) == 26.0
    assert estimator.saved_seconds(hit(NGINX)) == 30.0  # unknown own time: taken as instant
    assert estimator.saved_seconds(hit(NGINX, seconds=45.0)) == 0.0  # never negative


def test_observed_misses_update_the_mean_and_untimed_ones_do_not() -> None:
    estimator = SavingsEstimator(pull_bytes_per_second=50 * MB)
    estimator.observe(miss(NGINX, 10.0))
    estimator.observe(miss(NGINX, 20.0))
    estimator.observe(miss(NGINX, None))  # a mirror miss: the upstream pull was not seen
    estimator.observe(hit(NGINX, seconds=1.0))
    assert estimator.miss_seconds(NGINX) == 15.0


def test_an_image_that_never_missed_is_estimated_from_its_size() -> None:
    estimator = SavingsEstimator(pull_bytes_per_second=50 * MB)
    assert estimator.saved_seconds(hit(NGINX, seconds=0.5, image_bytes=200 * MB)) == 3.5
    estimator.observe(hit(REDIS, image_bytes=100 * MB))  # the size is remembered
    assert estimator.miss_seconds(REDIS) == 2.0
    estimator.observe(miss(REDIS, 9.0))  # an observed miss wins over the size
    assert estimator.miss_seconds(REDIS) == 9.0


def test_without_an_observed_miss_or_a_size_nothing_is_saved() -> None:
    estimator = SavingsEstimator(pull_bytes_per_second=50 * MB)
    assert estimator.miss_seconds(NGINX) == 0.0
    assert estimator.saved_seconds(hit(NGINX, seconds=1.0)) == 0.0


def test_saved_seconds_learns_from_each_lookup_it_is_given() -> None:
    estimator = SavingsEstimator(pull_bytes_per_second=50 * MB)
    assert estimator.saved_seconds(miss(NGINX, 40.0)) == 0.0  # a miss saved nothing, but …
    assert estimator.saved_seconds(hit(NGINX, seconds=1.0)) == 39.0  # … it set the estimate
    assert estimator.saved_seconds(hit(REDIS, image_bytes=100 * MB)) == 2.0
    assert estimator.saved_seconds(hit(REDIS)) == 2.0  # the size was remembered


def test_partials_and_misses_saved_nothing() -> None:
    estimator = SavingsEstimator(pull_bytes_per_second=1.0)
    estimator.observe(miss(NGINX, 30.0))
    partial = Lookup(
        image=NGINX, result=LookupResult.PARTIAL, at=0.0, source=LookupSource.POD, cache="web"
    )
    assert estimator.saved_seconds(partial) == 0.0
    assert estimator.saved_seconds(miss(NGINX, 1.0)) == 0.0


def test_memory_is_bounded_by_forgetting_the_least_recently_seen() -> None:
    estimator = SavingsEstimator(pull_bytes_per_second=1.0, max_images=2)
    estimator.observe(miss(NGINX, 10.0))
    estimator.observe(miss(REDIS, 20.0))
    estimator.observe(miss(NGINX, 30.0))  # NGINX is now the most recent
    estimator.observe(miss("docker.io/library/busybox:1", 5.0))
    assert estimator.miss_seconds(REDIS) == 0.0  # forgotten
    assert estimator.miss_seconds(NGINX) == 20.0


def test_concurrent_observations_are_all_counted() -> None:
    estimator = SavingsEstimator(pull_bytes_per_second=1.0)

    def observe() -> None:
        for _ in range(2_000):
            estimator.observe(miss(NGINX, 1.0))

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    estimator.observe(miss(NGINX, 8_001.0))
    assert estimator.miss_seconds(NGINX) == pytest.approx(16_001.0 / 8_001)


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        SavingsEstimator(pull_bytes_per_second=0)
