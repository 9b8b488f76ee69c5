-- 002: images pulled by image.pull, and the refs that name them.
-- An image row is written in the same transaction as the `done` of the step
-- that published its rootfs (rename into place), so a row never names a
-- half-written image.

CREATE TABLE images (
  digest   TEXT PRIMARY KEY,   -- manifest digest, sha256:...
  rootfs   TEXT NOT NULL,      -- path of the published rootfs.ext4
  size     INTEGER NOT NULL,   -- bytes of rootfs.ext4
  content  INTEGER NOT NULL,   -- bytes of the layers as stored in the registry
  config   TEXT,               -- config blob digest
  layers   BLOB,               -- msgpack array of layer digests, in order
  source   TEXT NOT NULL,      -- where it was first pulled from
  created  INTEGER NOT NULL,
  job      INTEGER             -- the job that built it
) WITHOUT ROWID;

CREATE TABLE image_refs (
  ref      TEXT PRIMARY KEY,   -- as written in specs: 127.0.0.1:5000/ci/busybox:1
  digest   TEXT NOT NULL,
  updated  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX image_refs_digest ON image_refs(digest);
