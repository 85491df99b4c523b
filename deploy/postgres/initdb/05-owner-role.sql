-- The warehouse-loader's login: owner of the database and its public schema, no superuser.
--
-- Run once by the postgres image's entrypoint (/docker-entrypoint-initdb.d) as POSTGRES_USER (the
-- superuser, whose password nothing else gets) in POSTGRES_DB. The loader connects as this role,
-- runs its migrations as it and owns what they create; it cannot read or write server files or run
-- programs (`COPY … FROM PROGRAM` is the superuser's, or pg_execute_server_program's). Role name and
-- password come from the environment (CRYPTOFLOW_OWNER_USER, CRYPTOFLOW_OWNER_PASSWORD).
\set ON_ERROR_STOP on
\getenv owner_user CRYPTOFLOW_OWNER_USER
\getenv owner_password CRYPTOFLOW_OWNER_PASSWORD

SELECT format('CREATE ROLE %I LOGIN', :'owner_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner_user')
\gexec

ALTER ROLE :"owner_user" WITH LOGIN PASSWORD :'owner_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
REVOKE pg_execute_server_program, pg_read_server_files, pg_write_server_files FROM :"owner_user";

-- The group roles the loader's migrations grant to (revision 0005): made here, by the superuser,
-- because the owner may not create roles.
SELECT format('CREATE ROLE %I NOLOGIN', name) FROM unnest(ARRAY['cryptoflow_loader', 'cryptoflow_reader']) AS name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name)
\gexec

SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'owner_user')
\gexec
ALTER SCHEMA public OWNER TO :"owner_user";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database())
\gexec
