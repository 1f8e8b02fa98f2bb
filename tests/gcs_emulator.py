"""The GCS emulator of the object-storage tests: gcp-storage-emulator (in memory), plus the
`x-goog-generation` headers that tensorstore, orbax's GCS client, reads on every download (the
emulator leaves them out, and orbax's second save to a folder then fails to parse a generation).

  python tests/gcs_emulator.py PORT BUCKET       # serves http://127.0.0.1:PORT until killed
"""

import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # pylint: disable=broad-except  (not found: the 404 stands as it is)
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj["metageneration"])


def main(port: int, bucket: str) -> None:
  objects.download = download  # objects.get (JSON API, alt=media) calls it by name...
  for _, methods in server.HANDLERS:  # ...and the routing table holds the function itself.
    for method, handler in methods.items():
      if handler is _download:
        methods[method] = download
  server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])
