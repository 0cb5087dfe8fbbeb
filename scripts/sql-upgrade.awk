# scripts/sql-upgrade.awk -- assembles an upgrade script from its source
# and the parts of the install script, so that a function the upgrade
# restates is written once, in its part.
#
#   awk -v source=src/sql/upgrade/X.sql -f scripts/sql-upgrade.awk PARTS...
#
# Prints the source with each line "-- @function NAME" replaced by the
# definition of function NAME (schema-qualified, as it stands in the parts
# after "CREATE FUNCTION"), made "CREATE OR REPLACE FUNCTION", and each line
# "-- @view NAME" by that of view NAME (after "CREATE VIEW", as it stands).
# A definition ends at the line "$$;" when it is dollar-quoted, else at the
# first line that ends with ";".  A name defined in no part, or in more than one (an
# overloaded function), is an error: write that one out in the source.

function fail(msg) {
	print "sql-upgrade.awk: " msg > "/dev/stderr"
	failed = 1
	exit 1
}

# In the parts: collect the definitions.
{
	if (name == "" && match($0, /^CREATE (OR REPLACE )?FUNCTION [^ (]+\(/)) {
		name = substr($0, 1, RLENGTH - 1)
		sub(/^CREATE (OR REPLACE )?FUNCTION /, "", name)
		text = ""
		dollar = 0
	} else if (name == "" && match($0, /^CREATE (OR REPLACE )?VIEW [^ (]+ /)) {
		name = substr($0, 1, RLENGTH - 1)
		sub(/^CREATE (OR REPLACE )?VIEW /, "", name)
		name = "view " name
		text = ""
		dollar = 0
	}
	if (name != "") {
		text = text $0 "\n"
		if (index($0, "$$") > 0)
			dollar = 1
		if ((dollar && $0 == "$$;") || (!dollar && $0 ~ /;[ \t]*$/)) {
			count[name]++
			def[name] = text
			name = ""
		}
	}
}

END {
	if (failed)
		exit 1
	if (name != "")
		fail("the definition of " name " does not end")
	while ((getline line < source) > 0) {
		if (line ~ /^-- @(function|view) /) {
			fn = line
			sub(/^-- @function /, "", fn)
			sub(/^-- @/, "", fn)
			if (!(fn in count))
				fail(source ": no part defines " fn)
			if (count[fn] > 1)
				fail(source ": " fn " is defined " count[fn] " times in the parts")
			out = def[fn]
			sub(/^CREATE (OR REPLACE )?FUNCTION /, "CREATE OR REPLACE FUNCTION ", out)
			printf "%s", out
		} else
			print line
	}
	close(source)
}
