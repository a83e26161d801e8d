"""Human review as a stage (README "Human review"): a stage whose handler is a person.

Owns the review stage's runtime: W.reviews (book), parking runs and completing them
(stage), the Python API reviewers decide with (desk) and its HTTP endpoints (http). The
queue's rules are pure policy in streams.policy.review. Must not be imported by
streams.runtime (the review stage builds on the stage worker, not the other way round).

Modules:
  records  ReviewEntry (schemas/review.avsc) and the decision headers sent downstream
  book     every run's latest entry, read from and written to W.reviews
  stage    ReviewWorker: the StageWorker of a review stage, its handler parks runs
  desk     ReviewDesk: list, stats, decide
  http     ReviewServer: GET/POST /v1/workflows/W/reviews
  metrics  the review worker's Prometheus families
"""

from streams.review.desk import ReviewDesk, ReviewNotPending, ReviewStats
from streams.review.http import ReviewServer
from streams.review.records import ReviewEntry
from streams.review.stage import ReviewWorker, review_worker

__all__ = [
    "ReviewDesk",
    "ReviewEntry",
    "ReviewNotPending",
    "ReviewServer",
    "ReviewStats",
    "ReviewWorker",
    "review_worker",
]
