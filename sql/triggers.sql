--
-- wf_start_trigger: runs start with the row as input, belong to the table's
-- owner whoever writes the row, and misuse is a clear error that leaves the
-- row unwritten.
--
CREATE ROLE wf_trig_owner LOGIN;
CREATE ROLE wf_trig_writer LOGIN;
SELECT wf_define('trig-flow', '{"steps": [{"name": "a", "sql": "SELECT $1->''input''"}]}');
CREATE TABLE trig_orders (id int, item text);
ALTER TABLE trig_orders OWNER TO wf_trig_owner;
GRANT INSERT, UPDATE, DELETE, SELECT ON trig_orders TO wf_trig_writer;
CREATE TRIGGER trig_start AFTER INSERT OR UPDATE OR DELETE ON trig_orders
	FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('trig-flow', '{"version": 1}');

SET ROLE wf_trig_writer;
INSERT INTO trig_orders VALUES (1, 'book');
UPDATE trig_orders SET item = 'pen';
DELETE FROM trig_orders;
RESET ROLE;
SELECT owner, version, input FROM wf.runs WHERE workflow = 'trig-flow' ORDER BY id;

-- Misuse.
CREATE TABLE trig_bad (id int);
CREATE TRIGGER trig_stmt AFTER INSERT ON trig_bad
	FOR EACH STATEMENT EXECUTE FUNCTION wf_start_trigger('trig-flow');
INSERT INTO trig_bad VALUES (1);
DROP TRIGGER trig_stmt ON trig_bad;
CREATE TRIGGER trig_noarg AFTER INSERT ON trig_bad
	FOR EACH ROW EXECUTE FUNCTION wf_start_trigger();
INSERT INTO trig_bad VALUES (1);
DROP TRIGGER trig_noarg ON trig_bad;
CREATE TRIGGER trig_3args AFTER INSERT ON trig_bad
	FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('trig-flow', '{}', 'x');
INSERT INTO trig_bad VALUES (1);
DROP TRIGGER trig_3args ON trig_bad;
CREATE TRIGGER trig_badopt AFTER INSERT ON trig_bad
	FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('trig-flow', 'not json');
INSERT INTO trig_bad VALUES (1);
DROP TRIGGER trig_badopt ON trig_bad;
CREATE TRIGGER trig_unknownopt AFTER INSERT ON trig_bad
	FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('trig-flow', '{"colour": "red"}');
INSERT INTO trig_bad VALUES (1);
DROP TRIGGER trig_unknownopt ON trig_bad;
CREATE TRIGGER trig_nowf AFTER INSERT ON trig_bad
	FOR EACH ROW EXECUTE FUNCTION wf_start_trigger('no-such-workflow');
INSERT INTO trig_bad VALUES (1);
DROP TRIGGER trig_nowf ON trig_bad;
SELECT wf_start_trigger();
-- Nothing of the failed inserts remains.
SELECT count(*) AS rows_left FROM trig_bad;
SELECT count(*) AS runs FROM wf.runs WHERE workflow = 'trig-flow';

DROP TABLE trig_orders, trig_bad;
