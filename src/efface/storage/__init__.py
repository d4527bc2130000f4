"""Object stores: where efface reads and writes objects that are not local files.

Only this package imports an object store's client (s3fs and botocore, the optional extra ``efface[s3]``); its
errors are translated into efface's at one boundary (``s3._translated``).
"""

from __future__ import annotations

from efface.storage.s3 import ObjectInfo, ReadObject, S3Store, StoredVersion, Written, open_store_for

__all__ = ["ObjectInfo", "ReadObject", "S3Store", "StoredVersion", "Written", "open_store_for"]
