-- Demo rows in Fusion's real tables (loaded by deploy/demo/run.sh after the Fusion schema): users with their
-- ExtraInfo (varchar primary key = roll number), two years of notifications, leave applications with segments and
-- replacements (CASCADE children) of which a third are old, a table whose name needs quoting ("Cpda Application"),
-- and awkward values (tabs, newlines, backslashes, non-ASCII) so the restore check means something.
BEGIN;
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
SELECT '!', false, 'user' || g, 'First' || g, E'O''Brien\t' || g, 'user' || g || '@iiitdmj.ac.in', g = 1, true,
       now() - make_interval(days => g)
FROM generate_series(1, 300) g;

INSERT INTO globals_departmentinfo (id, name) VALUES (1, 'CSE'), (2, 'ECE'), (3, 'Mechanical'), (4, 'Design');
INSERT INTO globals_extrainfo (id, title, sex, date_of_birth, user_status, address, phone_no, user_type, about_me,
                               date_modified, department_id, user_id)
SELECT '20' || lpad(u.id::text, 5, '0'), 'Mx.', 'O', date '2001-01-01' + u.id, 'PRESENT',
       E'Hostel Hall-' || (u.id % 4) || E'\nJabalpur \\ M.P. — भारत', 9000000000 + u.id, 'student',
       'about ' || u.username, now(), 1 + u.id % 4, u.id
FROM auth_user u;

INSERT INTO django_content_type (app_label, model) VALUES ('leave', 'leave'), ('notifications', 'notification')
ON CONFLICT DO NOTHING;

-- 20,000 notifications over two years: the older ~75 % are due for archival after 180 days.
INSERT INTO notifications_notification (level, unread, actor_object_id, verb, description, target_object_id,
                                        action_object_object_id, "timestamp", public, action_object_content_type_id,
                                        actor_content_type_id, recipient_id, target_content_type_id, deleted, emailed, data)
SELECT 'info', g % 3 = 0, (1 + g % 300)::text, 'leave ' || (ARRAY['applied', 'approved', 'rejected'])[1 + g % 3],
       'Your leave request #' || g || E' changed.\tSee the portal.', NULL, NULL,
       now() - make_interval(hours => g * 876 / 1000), true, NULL,
       (SELECT id FROM django_content_type WHERE app_label = 'leave' AND model = 'leave'),
       1 + g % 300, NULL, false, g % 2 = 0, '{"module": "leave"}'
FROM generate_series(1, 20000) g;

INSERT INTO leave_leavetype (name, max_in_year, requires_proof, authority_forwardable, for_faculty, for_staff,
                             for_student, requires_address)
VALUES ('casual', 8, false, true, true, true, false, false), ('medical', 15, true, true, true, true, true, true),
       ('vacation', 30, false, false, true, false, false, true);

INSERT INTO leave_leave (purpose, status, "timestamp", extra_info, applicant_id)
SELECT 'Purpose ' || g || E' — family \\ travel', (ARRAY['accepted', 'rejected', 'processing'])[1 + g % 3],
       now() - make_interval(days => g), NULL, 1 + g % 300
FROM generate_series(1, 900) g;
INSERT INTO leave_leavesegment (document, start_date, start_half, end_date, end_half, address, leave_id, leave_type_id)
SELECT NULL, l."timestamp"::date + 1, false, l."timestamp"::date + 3, true, 'Home, ' || l.id,
       l.id, (SELECT min(id) FROM leave_leavetype)
FROM leave_leave l;
INSERT INTO leave_replacementsegment (replacement_type, start_date, end_date, status, remark, leave_id, replacer_id)
SELECT 'academic', l."timestamp"::date + 1, l."timestamp"::date + 3, 'accepted', 'ok', l.id, 1 + (l.id + 7) % 300
FROM leave_leave l WHERE l.id % 2 = 0;

INSERT INTO "Cpda Application" (status, pf_number, purpose, requested_advance, request_timestamp, applicant_id)
SELECT 'requested', 'PF' || g, 'Conference travel ' || g, 1000 * g, now() - make_interval(days => g), 1 + g % 300
FROM generate_series(1, 200) g;
COMMIT;
ANALYZE;
