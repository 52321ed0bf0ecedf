"""The annotation server of ``crowdmed serve`` (needs the ``serve`` extra).

A study folder (:func:`study_from_package`, :func:`study_from_images`, :func:`open_study`)
holds the settings, the images and the votes database (SQLite, or PostgreSQL through a
database URL). :func:`create_app` serves it: invite links, a qualification quiz on gold items
(each annotator's accuracy ``γ`` is recorded), tasks one at a time with hidden gold mixed in,
and an admin page with the live consensus. :func:`export_votes` writes the long votes CSV that
``crowdmed aggregate``, ``crowdmed crowd import`` and ``crowdmed refine`` read.

Install with ``pip install 'crowdmed[serve]'``.
"""

from crowdmed.crowdsourcing.server.app import create_app
from crowdmed.crowdsourcing.server.study import (
    DATABASE_ENV,
    Study,
    StudySettings,
    create_study,
    export_votes,
    open_study,
    study_from_images,
    study_from_package,
    votes_frame,
)

__all__ = [
    "DATABASE_ENV",
    "Study",
    "StudySettings",
    "create_app",
    "create_study",
    "export_votes",
    "open_study",
    "study_from_images",
    "study_from_package",
    "votes_frame",
]
