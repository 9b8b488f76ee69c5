-- 003: VMs made by vm.create (docs/vms.md).
-- A VM's id is the id of the vm.create job that made it: every resource of
-- the VM is named from it (tap bg<hex id>, STATE/vms/<id>/, RUNTIME/vms/<id>/).
-- The row is written by the create job's reserve step (state 'creating', in
-- the same transaction as that step's done), set 'running' by its wait step,
-- 'stopped' when the hypervisor is gone, and 'deleted' by vm.delete or by the
-- rollback of the create job.  A deleted VM's row is kept for the op log.

CREATE TABLE vms (
  id          INTEGER PRIMARY KEY, -- = created_by
  name        TEXT NOT NULL,       -- a DNS label, unique among VMs not deleted
  state       TEXT NOT NULL,       -- creating running stopped deleted
  image       TEXT NOT NULL,       -- the image's manifest digest
  rootfs      TEXT NOT NULL,       -- the image's rootfs.ext4 (the overlay's backing file)
  kernel      TEXT NOT NULL,       -- name of the kernel under STATE/kernels/
  vcpus       INTEGER NOT NULL,
  memory      INTEGER NOT NULL,    -- bytes
  address     TEXT,                -- guest IPv4 (no NIC: NULL)
  tap         TEXT,                -- tap device (no NIC: NULL)
  overlay     TEXT NOT NULL,       -- qcow2 root disk over rootfs
  run_dir     TEXT NOT NULL,       -- sockets, pidfile, console log
  pid         INTEGER,             -- the hypervisor's pid, once started
  node        TEXT,                -- the bangerd that runs it
  error       TEXT,                -- why it stopped, when it did by itself
  created     INTEGER NOT NULL,
  deleted     INTEGER,
  created_by  INTEGER NOT NULL,    -- the vm.create job
  deleted_by  INTEGER              -- the vm.delete job (NULL: its create rolled back)
);

CREATE UNIQUE INDEX vms_live_name ON vms(name) WHERE state != 'deleted';
CREATE UNIQUE INDEX vms_live_address ON vms(address)
  WHERE state != 'deleted' AND address IS NOT NULL;
