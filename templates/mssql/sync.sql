{#- Fragments shared by the SQL Server sync procedures (usp_Sync_*), the twins of
    templates/postgresql/sync.sql. `sync_entities` lists the entity specs that have [sync]. -#}

{#- Take the scope's session-owned application lock unless this session holds it already, or
    refuse (error 50013) naming the session that holds the scope. The resource is a hash of entity
    and scope (sp_getapplock takes at most 255 characters; a scope may have 300). Needs @Entity,
    @Scope, @LockResource nvarchar(255), @LockResult int, @Holder uniqueidentifier,
    @HolderStatus nvarchar(20), @ErrorText nvarchar(max). -#}
{%- macro take_scope_lock() -%}
SET @LockResource = N'dbtools.Sync.' + CONVERT(nvarchar(64), HASHBYTES('SHA2_256', @Entity + N':' + @Scope), 2);
        IF APPLOCK_MODE(N'public', @LockResource, N'Session') = N'NoLock'
        BEGIN
            EXEC @LockResult = sys.sp_getapplock
                @Resource = @LockResource,
                @LockMode = N'Exclusive',
                @LockOwner = N'Session',
                @LockTimeout = 0;
            IF @LockResult < 0
            BEGIN
                SELECT @Holder = s.[SessionId], @HolderStatus = s.[Status]
                FROM {{ job('SyncSession') }} AS s
                WHERE s.[EntityName] = @Entity AND s.[Scope] = @Scope AND s.[Status] IN (N'Open', N'Promoting', N'Failed');
                SET @ErrorText = N'A sync of ' + @Entity + N' scope ' + @Scope + N' is in progress in another session: session '
                    + ISNULL(LOWER(CONVERT(nvarchar(36), @Holder)), N'unknown') + N' (' + ISNULL(@HolderStatus, N'starting')
                    + N') holds the scope (sp_getapplock returned ' + CONVERT(nvarchar(11), @LockResult) + N'); wait for it to end.';
                SET @ErrorText = REPLACE(@ErrorText, N'%', N'%%');
                THROW 50013, @ErrorText, 1;
            END;
        END;
{%- endmacro -%}


{#- The variables take_scope_lock needs besides @Entity, @Scope and @ErrorText. -#}
{%- macro lock_declarations() -%}
DECLARE @LockResource nvarchar(255);
    DECLARE @LockResult int;
    DECLARE @Holder uniqueidentifier;
    DECLARE @HolderStatus nvarchar(20);
{%- endmacro -%}
