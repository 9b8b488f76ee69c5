/*
 * test_list.h: every unit test, once (libuv's test/test-list.h).  Add one
 * X(name) line per TEST(name); keep each file's tests together.
 */
#ifndef BANGER_TEST_LIST_H
#define BANGER_TEST_LIST_H

#define TEST_LIST(X)                  \
	/* tests/unit/test_agent.c */  \
	X(agent_proto_exec_roundtrip) \
	X(agent_proto_header_checks)  \
	X(agent_proto_exec_refusals)  \
	X(agent_proto_exit_and_error) \
	X(agent_proto_sync_find)      \
	X(agent_proto_fuzz)           \
	X(agent_host_exec_stream_and_exit) \
	X(agent_host_start_error)     \
	X(agent_host_refuses_garbage) \
	X(agent_host_handshake)       \
	X(agent_host_timeout_kills)   \
	X(agent_proto_entry_encode)   \
	X(agent_host_import)          \
	X(agent_host_import_refusals) \
	/* tests/unit/test_workspace.c */ \
	X(workspace_exclude_patterns) \
	X(workspace_entry_codec)      \
	X(export_to_rules_limit_and_commit) \
	X(workspace_build_small)      \
	/* tests/unit/test_spec.c */  \
	X(spec_minimal)               \
	X(spec_name)                  \
	X(spec_common_keys)           \
	X(spec_params_normalized)     \
	X(spec_size_units)            \
	X(spec_unknown_key)           \
	X(spec_duplicate_key)         \
	X(spec_wrong_types)           \
	X(spec_range_errors)          \
	X(spec_unknown_kind)          \
	X(spec_missing_kind_and_field) \
	X(spec_unknown_need)          \
	X(spec_cycle)                 \
	X(spec_self_need)             \
	X(spec_duplicate_names)       \
	X(spec_bad_job_names)         \
	X(spec_empty)                 \
	X(spec_bad_yaml)              \
	X(spec_top_level)             \
	X(spec_alias_bomb)            \
	X(spec_alias_ok)              \
	X(spec_too_many_jobs)         \
	X(spec_error_cap)             \
	X(spec_topo_order)            \
	X(spec_msgpack_ok)            \
	X(spec_msgpack_errors)        \
	X(spec_msgpack_100k)          \
	/* tests/unit/test_config.c */ \
	X(config_defaults)            \
	X(config_file_values)         \
	X(config_discovery)           \
	X(config_env_override)        \
	X(config_unknown_key)         \
	X(config_bad_values)          \
	X(config_missing_file)        \
	X(config_helper_keys)         \
	X(config_helper_bad_values)   \
	X(config_vm_keys)             \
	/* tests/unit/test_helper.c */ \
	X(helper_frame_len)           \
	X(helper_prescan_bounds_allocation) \
	X(helper_tap_names)           \
	X(helper_bridge_and_dm_names) \
	X(helper_addresses_in_range)  \
	X(helper_paths_under_bangers_dirs) \
	X(helper_devices_and_signals) \
	X(helper_envelope_strict)     \
	X(helper_params_exact_fields) \
	X(helper_policy_checked)      \
	X(helper_inverse_table)       \
	X(helper_plan_record)         \
	/* tests/unit/test_vm.c */     \
	X(vm_name_rules)              \
	X(vm_kinds_registered)        \
	/* tests/unit/test_cowdisk.c */ \
	X(cowdisk_sparse_copy_keeps_holes) \
	X(cowdisk_reflink_or_clean_fallback) \
	X(cowdisk_refusals)           \
	/* tests/unit/test_firecracker.c */ \
	X(fc_plan_bodies)             \
	X(fc_plan_minimal_and_refusals) \
	X(fc_plan_jailer_argv_and_paths) \
	X(hv_driver_names_and_qcow2_refused) \
	/* tests/unit/test_queue.c */  \
	X(queue_migrations_applied)   \
	X(queue_fencing_by_epoch)     \
	X(queue_idempotent_submit)    \
	X(queue_claim_slots_and_priority) \
	X(queue_dependents_released_or_skipped) \
	X(queue_events_sequence_per_job) \
	X(queue_images_by_ref_and_digest) \
	X(queue_vms_names_addresses_and_states) \
	/* tests/unit/test_imgsrc.c */ \
	X(imgsrc_ref_parse)           \
	X(imgsrc_ref_errors)          \
	X(imgsrc_source_refs)         \
	X(imgsrc_www_authenticate)    \
	X(imgsrc_credentials_file)    \
	X(imgsrc_loopback_hosts)      \
	X(imgsrc_blobstore_verify_and_resume) \
	X(imgsrc_blobstore_prune)     \
	/* tests/unit/test_rootfs.c */ \
	X(rootfs_path_clean_ok)       \
	X(rootfs_path_clean_refused)  \
	X(rootfs_whiteout_names)      \
	X(rootfs_media_types)         \
	X(rootfs_tree_whiteouts_and_opaque) \
	X(rootfs_tree_whiteouts_spare_their_own_layer) \
	X(rootfs_tree_replace_rules)  \
	X(rootfs_tree_symlinked_parents_stay_inside) \
	X(rootfs_tree_hardlinks)      \
	X(rootfs_tree_finish_numbers_and_lost_found)

#endif
