"""Object commands (Part 3 §12, §24.1, §28.4-28.5): TPM2_CreatePrimary, TPM2_Create,
TPM2_Load, TPM2_LoadExternal, TPM2_ReadPublic, TPM2_ObjectChangeAuth, TPM2_Unseal,
TPM2_CreateLoaded, TPM2_EvictControl and TPM2_FlushContext.

Each handler follows the order of checks of the reference implementation's command (which
swtpm exhibits; tests/test_objects.py compares the codes with swtpm's): room for the object
first, then the parent, then the public area (+P2), then the sensitive area (+P1).
"""

from __future__ import annotations

import copy
import io
from typing import TYPE_CHECKING, Any, Callable

import construct as c

from .. import keys, objects, protection, sequences
from ..constants import ALG, CC, HR_HMAC_SESSION, HR_POLICY_SESSION, HT, RC, RH, ST
from ..crypto import HASHES
from ..errors import TpmError
from ..handles import TPMI_RH_HIERARCHY_NULL, TPMI_RH_PROVISION, handle_param
from ..object_checks import (adjust_auth, blame, create_checks, is_derivation_parent,
                             public_attributes_validation, scheme_checks, validate_keys)
from ..objects import (FLAG_EXTERNAL, FLAG_PRIMARY, FLAG_ST_CLEAR, FLAG_TEMPORARY, TpmObject,
                       check_object_handle)
from ..objects_wire import (TPM2B_CREATION_DATA, TPM2B_PRIVATE, TPM2B_PUBLIC,
                            TPM2B_PUBLIC_NULL, TPM2B_SENSITIVE, TPM2B_SENSITIVE_CREATE,
                            TPMT_PUBLIC, TPMT_TK_CREATION, ObjectAttr, name_of,
                            parse_sensitive, public_bytes, sensitive_bytes)
from ..registry import Auth, HandleSpec, command
from ..wire import (MAX_ACTIVE_SESSIONS, PCR_COUNT, TPM2B_AUTH, TPM2B_DATA, TPM2B_DIGEST,
                    TPM2B_NAME, TPM2B_SENSITIVE_DATA, TPML_PCR_SELECTION, bitmap_of,
                    parse_stream, pcr_bitmap, tpm2b)
from .hash import TICKET_HASH, hierarchy_proof

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

#: Handle check of every object handle (TPMI_DH_OBJECT).
OBJECT_HANDLE = check_object_handle


# ---------------------------------------------------------------------------- helpers


def hierarchy_seed(tpm: Tpm, hierarchy: int) -> bytes:
    """The Primary Seed of ``hierarchy`` (Part 1 §14.3): EPS, SPS, PPS, or the null seed
    that TPM Reset replaces."""
    perm = tpm.perm
    return {RH.OWNER: perm.sps, RH.ENDORSEMENT: perm.eps, RH.PLATFORM: perm.pps,
            RH.NULL: tpm.vol.state_reset.null_seed}[hierarchy]


def _locality_attributes(locality: int) -> int:
    """TPMA_LOCALITY of a locality (Part 2 §8.5): one bit for 0-4, the value for 32-255."""
    return 1 << locality if locality < 5 else locality


def pcr_digest(tpm: Tpm, name_alg: int, selection: list) -> tuple[list, bytes]:
    """PCRComputeCurrentDigest(): the selection with unallocated banks and unimplemented PCRs
    removed, and H_nameAlg of the selected values in selection order."""
    h = HASHES[name_alg].new()
    filtered = []
    for sel in selection:
        bank = tpm.pcrs.values.get(sel.hash)
        chosen = [p for p in pcr_bitmap(sel.pcrSelect) if p < PCR_COUNT] if bank else []
        for pcr in chosen:
            h.update(bank[pcr])
        filtered.append(dict(hash=sel.hash, sizeofSelect=sel.sizeofSelect,
                             pcrSelect=bitmap_of(chosen, sel.sizeofSelect)))
    return filtered, h.digest()


def creation_data(ctx: CommandContext, parent_handle: int, parent: TpmObject | None,
                  name_alg: int, outside_info: bytes, creation_pcr: list) -> tuple[dict, bytes]:
    """FillInCreationData() (Part 3 §12.1, Part 2 §15.1): TPMS_CREATION_DATA and its
    nameAlg digest, the creationHash. A primary's parent is its hierarchy handle (name and
    qualified name), with parentNameAlg TPM_ALG_NULL."""
    selection, digest = pcr_digest(ctx.tpm, name_alg, creation_pcr)
    if parent is None:
        handle = parent_handle.to_bytes(4, "big")
        parent_alg, parent_name, parent_qn = ALG.NULL, handle, handle
    else:
        parent_alg = parent.public.nameAlg
        parent_name, parent_qn = parent.name, parent.qualified_name
    data = dict(pcrSelect=selection, pcrDigest=digest,
                locality=_locality_attributes(ctx.locality), parentNameAlg=parent_alg,
                parentName=parent_name, parentQualifiedName=parent_qn,
                outsideInfo=outside_info)
    marshalled = TPM2B_CREATION_DATA.build(data)[2:]
    return data, HASHES[name_alg].digest(marshalled)


def creation_ticket(tpm: Tpm, hierarchy: int, name: bytes, creation_hash: bytes) -> dict:
    """TPMT_TK_CREATION (Part 2 §10.7.3, Part 4 TicketComputeCreation()):
    HMAC_contextHash(proof, TPM_ST_CREATION || Name || creationHash), keyed with the proof of
    the object's hierarchy (the null proof for the NULL hierarchy)."""
    mac = HASHES[TICKET_HASH].hmac(hierarchy_proof(tpm, hierarchy),
                                   int(ST.CREATION).to_bytes(2, "big"), name, creation_hash)
    return dict(tag=ST.CREATION, hierarchy=hierarchy, digest=mac)


def parent_qn(tpm: Tpm, handle: int) -> bytes:
    """The Qualified Name of a parent: a hierarchy's is its handle, an object's is kept with
    it."""
    if handle >> 24 == HT.PERMANENT:
        return handle.to_bytes(4, "big")
    return objects.lookup(tpm, handle).qualified_name


def _loaded_flags(public: Any, parent: TpmObject | None, hierarchy: int) -> int:
    """ObjectSetLoadedAttributes(): stClear is inherited from the parent; objects of the NULL
    hierarchy are temporary."""
    flags = 0
    if public.objectAttributes & ObjectAttr.ST_CLEAR or (parent is not None and
                                                         parent.st_clear):
        flags |= FLAG_ST_CLEAR
    if hierarchy == RH.NULL or (parent is not None and parent.temporary):
        flags |= FLAG_TEMPORARY
    return flags


def _parent(ctx: CommandContext, handle: int) -> TpmObject:
    """A parent for TPM2_Create / TPM2_Load: a loaded storage parent (Part 3 §12.1.1:
    TPM_RC_TYPE + H1 for anything else)."""
    parent = objects.lookup(ctx.tpm, handle)
    if not parent.is_parent:
        raise TpmError(RC.TYPE, handle=1, detail="parent is not a storage key")
    return parent


def _derive_primary(tpm: Tpm, hierarchy: int, public: Any, auth: bytes, data: bytes) -> Any:
    """The Primary Object of ``hierarchy`` for the template ``public`` (filled in place; the
    TPMT_SENSITIVE is returned): derived from the hierarchy's seed and the template's Name,
    with the storage and endorsement proofs mixed in for the endorsement hierarchy (Part 1
    "Primary Objects"). TPM2_CreatePrimary and TPM2_CreateLoaded share it, so the same
    template gives the same key through either."""
    template_name = name_of(public_bytes(public), public.nameAlg)
    proofs = (tpm.perm.sh_proof, tpm.perm.eh_proof) if hierarchy == RH.ENDORSEMENT else ()
    return keys.derive_primary(hierarchy_seed(tpm, hierarchy), template_name, public, auth,
                               data, eps_proofs=proofs)


def _new_object(tpm: Tpm, public: Any, sensitive: Any, *, parent: TpmObject | None,
                parent_handle: int, hierarchy: int, extra_flags: int = 0) -> TpmObject:
    area = public_bytes(public)
    name = name_of(area, public.nameAlg)
    flags = _loaded_flags(public, parent, hierarchy) | extra_flags
    if flags & FLAG_EXTERNAL:
        qn = name
    else:
        qn = objects.qualified_name(parent_qn(tpm, parent_handle), public.nameAlg, name)
    return TpmObject(area, sensitive_bytes(sensitive) if sensitive is not None else b"",
                     name, qn, hierarchy, flags)


# ---------------------------------------------------------------------------- commands

_CREATE_PARAMS = (TPM2B_SENSITIVE_CREATE, TPM2B_PUBLIC, TPM2B_DATA, TPML_PCR_SELECTION)


@command(CC.CreatePrimary,
         handles=(HandleSpec("primaryHandle", TPMI_RH_HIERARCHY_NULL, Auth.USER),),
         params=_CREATE_PARAMS,
         response=(TPM2B_PUBLIC, TPM2B_CREATION_DATA, TPM2B_DIGEST, TPMT_TK_CREATION,
                   TPM2B_NAME),
         response_handle=True)
def create_primary(ctx: CommandContext, hierarchy: int, in_sensitive: Any, in_public: Any,
                   outside_info: bytes, creation_pcr: list) -> tuple:
    """Part 3 §24.1: derive a Primary Object from the hierarchy's seed and the template and
    load it. The same template gives the same key until the seed changes."""
    tpm = ctx.tpm
    objects.free_handle(tpm)
    public = in_public
    with blame(2):
        create_checks(None, public, len(in_sensitive.data))
    with blame(1):
        auth = adjust_auth(in_sensitive.userAuth, public.nameAlg)
    sensitive = _derive_primary(tpm, hierarchy, public, auth, in_sensitive.data)
    obj = _new_object(tpm, public, sensitive, parent=None, parent_handle=hierarchy,
                      hierarchy=hierarchy, extra_flags=FLAG_PRIMARY)
    data, creation_hash = creation_data(ctx, hierarchy, None, public.nameAlg, outside_info,
                                        creation_pcr)
    ticket = creation_ticket(tpm, hierarchy, obj.name, creation_hash)
    handle = objects.insert(tpm, obj)
    return handle, obj.public, data, creation_hash, ticket, obj.name


@command(CC.Create,
         handles=(HandleSpec("parentHandle", OBJECT_HANDLE, Auth.USER),),
         params=_CREATE_PARAMS,
         response=(TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2B_CREATION_DATA, TPM2B_DIGEST,
                   TPMT_TK_CREATION))
def create(ctx: CommandContext, parent_handle: int, in_sensitive: Any, in_public: Any,
           outside_info: bytes, creation_pcr: list) -> tuple:
    """Part 3 §12.1: create an ordinary object under a storage parent and return it wrapped
    by the parent (Part 1 "Protected Storage"); it is not loaded."""
    tpm = ctx.tpm
    parent = _parent(ctx, parent_handle)
    # The reference needs a free slot as scratch space even though nothing stays loaded.
    objects.free_handle(tpm)
    public = in_public
    with blame(2):
        create_checks(parent, public, len(in_sensitive.data))
    with blame(1):
        auth = adjust_auth(in_sensitive.userAuth, public.nameAlg)
    sensitive = keys.create_object(public, auth, in_sensitive.data, tpm.drbg,
                                   deterministic=False)
    obj = _new_object(tpm, public, sensitive, parent=parent, parent_handle=parent_handle,
                      hierarchy=parent.hierarchy)
    data, creation_hash = creation_data(ctx, parent_handle, parent, public.nameAlg,
                                        outside_info, creation_pcr)
    ticket = creation_ticket(tpm, parent.hierarchy, obj.name, creation_hash)
    private = protection.wrap(parent.public, parent.seed_value, obj.name,
                              obj.sensitive_area, tpm.drbg.generate)
    return private, obj.public, data, creation_hash, ticket


@command(CC.Load,
         handles=(HandleSpec("parentHandle", OBJECT_HANDLE, Auth.USER),),
         params=(TPM2B_PRIVATE, TPM2B_PUBLIC),
         response=(TPM2B_NAME,),
         response_handle=True)
def load(ctx: CommandContext, parent_handle: int, in_private: bytes, in_public: Any) -> tuple:
    """Part 3 §12.2: unwrap a private area with its parent, check it belongs to the public
    area, and load the object."""
    tpm = ctx.tpm
    objects.free_handle(tpm)
    if not in_private:
        raise TpmError(RC.SIZE, parameter=1, detail="empty private area")
    parent = _parent(ctx, parent_handle)
    public = in_public
    area = public_bytes(public)
    name = name_of(area, public.nameAlg)
    with blame(1):
        sensitive = parse_sensitive(protection.unwrap(parent.public, parent.seed_value, name,
                                                      in_private))
    if len(sensitive.seedValue) > HASHES[public.nameAlg].size:
        raise TpmError(RC.KEY_SIZE, parameter=1, detail="seedValue longer than a digest")
    with blame(2):
        public_attributes_validation(parent, public)
    if sensitive.sensitiveType != public.type:
        raise TpmError(RC.TYPE, parameter=1, detail="sensitive type differs from public")
    if not parent.attributes & ObjectAttr.FIXED_TPM:
        # Part 3 §12.2.1: only keys under a fixedTPM parent are known to come from this TPM.
        validate_keys(public, sensitive, 2, 1)
    obj = _new_object(tpm, public, sensitive, parent=parent, parent_handle=parent_handle,
                      hierarchy=parent.hierarchy)
    return objects.insert(tpm, obj), obj.name


@command(CC.LoadExternal,
         params=(TPM2B_SENSITIVE, TPM2B_PUBLIC_NULL, handle_param(TPMI_RH_HIERARCHY_NULL)),
         response=(TPM2B_NAME,),
         response_handle=True)
def load_external(ctx: CommandContext, in_private: Any, in_public: Any,
                  hierarchy: int) -> tuple:
    """Part 3 §12.3: load a public key, or a key pair in the NULL hierarchy, that this TPM
    did not create; it can never be a parent or be made persistent."""
    tpm = ctx.tpm
    objects.free_handle(tpm)
    if not objects.hierarchy_enabled(tpm, hierarchy):
        raise TpmError(RC.HIERARCHY, parameter=3, detail="hierarchy disabled")
    public = in_public
    if in_private is not None:
        if hierarchy != RH.NULL:
            raise TpmError(RC.HIERARCHY, parameter=3, detail="key pair outside NULL")
        if public.objectAttributes & (ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT
                                      | ObjectAttr.RESTRICTED):
            raise TpmError(RC.ATTRIBUTES, parameter=2, detail="external key looks internal")
    if in_private is None or public.nameAlg == ALG.NULL:
        with blame(2):
            scheme_checks(None, public)
    else:
        if len(in_private.seedValue) > HASHES[public.nameAlg].size:
            raise TpmError(RC.KEY_SIZE, parameter=1, detail="seedValue longer than a digest")
        with blame(2):
            public_attributes_validation(None, public)
    validate_keys(public, in_private, 2, 1)
    obj = _new_object(tpm, public, in_private, parent=None, parent_handle=hierarchy,
                      hierarchy=hierarchy, extra_flags=FLAG_EXTERNAL | FLAG_TEMPORARY)
    return objects.insert(tpm, obj), obj.name


@command(CC.ReadPublic,
         handles=(HandleSpec("objectHandle", OBJECT_HANDLE),),
         response=(TPM2B_PUBLIC_NULL, TPM2B_NAME, TPM2B_NAME))
def read_public(ctx: CommandContext, handle: int) -> tuple:
    """Part 3 §12.4: the public area, Name and Qualified Name of a loaded object."""
    obj = objects.lookup(ctx.tpm, handle)
    return obj.public, obj.name, obj.qualified_name


@command(CC.ObjectChangeAuth,
         handles=(HandleSpec("objectHandle", OBJECT_HANDLE, Auth.ADMIN),
                  HandleSpec("parentHandle", OBJECT_HANDLE)),
         params=(TPM2B_AUTH,),
         response=(TPM2B_PRIVATE,))
def object_change_auth(ctx: CommandContext, handle: int, parent_handle: int,
                       new_auth: bytes) -> bytes:
    """Part 3 §12.8: the object's sensitive area with a new authValue, wrapped by its parent
    (the loaded object keeps its old authValue; the caller loads the new private area)."""
    tpm = ctx.tpm
    obj = objects.lookup(tpm, handle)
    with blame(1):
        auth = adjust_auth(new_auth, obj.public.nameAlg)
    # The parent is recognised by the object's Qualified Name, which hashes the parent's. An
    # external object's QN is its Name and an object without nameAlg has none: no parent
    # matches them (swtpm 0.7.1 answers TPM_RC_RETRY for the latter, a libtpms quirk).
    if obj.external or obj.public.nameAlg not in HASHES:
        raise TpmError(RC.TYPE, handle=2, detail="an external object has no parent")
    expected = objects.qualified_name(parent_qn(tpm, parent_handle), obj.public.nameAlg,
                                      obj.name)
    if expected != obj.qualified_name:
        raise TpmError(RC.TYPE, handle=2, detail="not the object's parent")
    parent = objects.lookup(tpm, parent_handle)
    sensitive = copy.copy(obj.sensitive)
    sensitive.authValue = auth
    return protection.wrap(parent.public, parent.seed_value, obj.name,
                           sensitive_bytes(sensitive), tpm.drbg.generate)


# ---------------------------------------------------------------------------- EvictControl

#: The platform's part of the persistent range (Part 2 §7.5, PC Client profile: the upper
#: half, 0x81800000-0x81FFFFFF).
PLATFORM_PERSISTENT = objects.PERSISTENT_FIRST + 0x00800000


def _check_persistent_handle(handle: int) -> None:
    # Part 2 §9.12 TPMI_DH_PERSISTENT: a persistent handle; anything else is TPM_RC_VALUE.
    if not objects.is_persistent(handle):
        raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a TPMI_DH_PERSISTENT")


@command(CC.EvictControl,
         handles=(HandleSpec("auth", TPMI_RH_PROVISION, Auth.USER),
                  HandleSpec("objectHandle", OBJECT_HANDLE)),
         params=(handle_param(_check_persistent_handle),),
         nv=True)
def evict_control(ctx: CommandContext, auth: int, handle: int, persistent: int) -> None:
    """Part 3 §28.5: make a loaded object persistent at ``persistent``, or remove the
    persistent object ``handle``. The owner manages the storage and endorsement hierarchies'
    objects in the lower half of the range, the platform its own in the upper half (and may
    remove any)."""
    tpm = ctx.tpm
    obj = objects.lookup(tpm, handle)
    evicted = objects.is_persistent(handle)
    if obj.temporary or obj.st_clear or obj.public_only:
        raise TpmError(RC.ATTRIBUTES, handle=2, detail="object may not be persistent")
    if evicted and handle != persistent:
        raise TpmError(RC.HANDLE, handle=2, detail="persistentHandle is not the object's")
    platform_range = persistent >= PLATFORM_PERSISTENT
    if auth == RH.PLATFORM:
        if not evicted:
            if obj.hierarchy != RH.PLATFORM:
                raise TpmError(RC.HIERARCHY, handle=2, detail="not a platform object")
            if not platform_range:
                raise TpmError(RC.RANGE, parameter=1, detail="outside the platform range")
    else:
        if obj.hierarchy == RH.PLATFORM:
            raise TpmError(RC.HIERARCHY, handle=2, detail="a platform object")
        if not evicted and platform_range:
            raise TpmError(RC.RANGE, parameter=1, detail="inside the platform range")
    if evicted:
        objects.evict(tpm, handle)
    else:
        objects.make_persistent(tpm, persistent, obj)


# ---------------------------------------------------------------------------- FlushContext

#: What flushes a context of each handle type. Objects are here; the sessions module adds
#: TPM_HT_HMAC_SESSION and TPM_HT_POLICY_SESSION with :func:`register_flusher`.
FLUSHERS: dict[int, Callable[["Tpm", int], None]] = {HT.TRANSIENT: objects.flush}


def register_flusher(handle_type: HT, flusher: Callable[["Tpm", int], None]) -> None:
    """Make TPM2_FlushContext flush handles of ``handle_type`` with ``flusher(tpm, handle)``,
    which raises TpmError(TPM_RC_HANDLE) when nothing is loaded there."""
    FLUSHERS[int(handle_type)] = flusher


def _check_context_handle(handle: int) -> None:
    # Part 2 §9.11 TPMI_DH_CONTEXT: a transient object or an HMAC or policy session handle.
    if objects.TRANSIENT_FIRST <= handle <= objects.transient_last():
        return
    for first in (HR_HMAC_SESSION, HR_POLICY_SESSION):
        if 0 <= handle - first < MAX_ACTIVE_SESSIONS:
            return
    raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a TPMI_DH_CONTEXT")


@command(CC.FlushContext, params=(handle_param(_check_context_handle),))
def flush_context(ctx: CommandContext, handle: int) -> None:
    """Part 3 §28.4: remove a loaded object or session from TPM memory; nothing there is
    TPM_RC_HANDLE + P1."""
    flusher = FLUSHERS.get(handle >> 24)
    if flusher is None:
        raise TpmError(RC.HANDLE, parameter=1, detail="no such context")
    try:
        flusher(ctx.tpm, handle)
    except TpmError as exc:
        raise TpmError(exc.rc, parameter=1, detail=exc.detail) from None


# ---------------------------------------------------------------------------- Unseal


@command(CC.Unseal,
         handles=(HandleSpec("itemHandle", OBJECT_HANDLE, Auth.USER),),
         response=(TPM2B_SENSITIVE_DATA,))
def unseal(ctx: CommandContext, handle: int) -> bytes:
    """Part 3 §12.7: the secret of a sealed data object — a keyed-hash object that is neither
    a signing nor a decryption key nor restricted (TPM_RC_TYPE for another type,
    TPM_RC_ATTRIBUTES otherwise, both on the handle). The response's first parameter is a
    TPM2B, so an encrypt session can protect the secret on its way out."""
    obj = sequences.loaded_object(ctx.tpm, handle)
    if obj is None:
        # A sequence has no object type (the reference's sequence objects are TPM_ALG_NULL).
        raise TpmError(RC.TYPE, handle=1, detail="a sequence holds no sealed data")
    if obj.public.type != ALG.KEYEDHASH:
        raise TpmError(RC.TYPE, handle=1, detail="not a sealed data object")
    if obj.attributes & (ObjectAttr.DECRYPT | ObjectAttr.SIGN_ENCRYPT | ObjectAttr.RESTRICTED):
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="a key, not sealed data")
    return obj.sensitive.sensitive if obj.sensitive is not None else b""


# ---------------------------------------------------------------------------- CreateLoaded

#: TPM2B_TEMPLATE (Part 2 §12.2.6): a marshalled TPMT_PUBLIC, or a TPMT_TEMPLATE whose unique
#: field is a TPMS_DERIVE. Its capacity is sizeof(TPMT_PUBLIC) of the reference implementation
#: (484 octets in swtpm 0.7.1: a larger size is TPM_RC_SIZE + P2, as there).
TEMPLATE_MAX = 484
TPM2B_TEMPLATE = tpm2b(TEMPLATE_MAX)
#: TPM2B_LABEL (Part 2 §10.4.13): at most LABEL_MAX_BUFFER (32) octets, TPM_RC_SIZE beyond.
TPM2B_LABEL = tpm2b(32)
#: TPMS_DERIVE (Part 2 §11.1.17): the label and context of a Derived Object.
TPMS_DERIVE = c.Struct("label" / TPM2B_LABEL, "context" / TPM2B_LABEL)
#: A TPMT_PUBLIC whose unique field is a TPMS_DERIVE (what UnmarshalToPublic() reads when the
#: parent is a derivation parent).
_DERIVE_TEMPLATE = c.Struct(*TPMT_PUBLIC.subcons[:-1], "derive" / TPMS_DERIVE)


def _check_parent_handle(handle: int) -> None:
    # Part 2 §9.4 +TPMI_DH_PARENT: an object, a Primary Seed's hierarchy or TPM_RH_NULL;
    # anything else is TPM_RC_VALUE.
    if handle in (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.NULL):
        return
    check_object_handle(handle)


def _parse_template(data: bytes, derivation: bool) -> tuple[Any, Any]:
    """UnmarshalToPublic(): the template as a TPMT_PUBLIC, or with a TPMS_DERIVE in place of
    unique for a derivation parent (returned second, else None). The template must be used up
    (TPM_RC_SIZE); every error is the caller's + P2."""
    stream = io.BytesIO(data)
    with blame(2):
        value = parse_stream(_DERIVE_TEMPLATE if derivation else TPMT_PUBLIC, stream)
        if stream.tell() != len(data):
            raise TpmError(RC.SIZE, detail="octets after the template")
    if not derivation:
        return value, None
    public = c.Container(type=value.type, nameAlg=value.nameAlg,
                         objectAttributes=value.objectAttributes,
                         authPolicy=value.authPolicy, parameters=value.parameters, unique=None)
    return public, value.derive


def _label_and_context(derive: Any, data: bytes) -> tuple[bytes, bytes]:
    """SetLabelAndContext(): the template's label and context, each replaced by the one of a
    TPMS_DERIVE in the sensitive data when it is empty. Unmarshalling errors of that
    TPMS_DERIVE carry no parameter number (as in the reference); octets after it are
    ignored."""
    label, context = derive.label, derive.context
    if data:
        extra = parse_stream(TPMS_DERIVE, io.BytesIO(data))
        label = label or extra.label
        context = context or extra.context
    return label, context


@command(CC.CreateLoaded,
         handles=(HandleSpec("parentHandle", _check_parent_handle, Auth.USER),),
         params=(TPM2B_SENSITIVE_CREATE, TPM2B_TEMPLATE),
         response=(TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2B_NAME),
         response_handle=True)
def create_loaded(ctx: CommandContext, parent_handle: int, in_sensitive: Any,
                  in_template: bytes) -> tuple:
    """Part 3 §12.9: create an object and load it. Under a hierarchy it is the Primary Object
    TPM2_CreatePrimary would make from the same template; under a storage parent an ordinary
    object, returned wrapped as TPM2_Create returns it; under a derivation parent a Derived
    Object, computed from the parent's secret, the template and TPMS_DERIVE {label, context}
    (RSA keys cannot be derived: TPM_RC_TYPE + P2). Only an ordinary object has an outPrivate.
    Checks in the reference's order: parent type, room, template, authValue size, then the
    attributes."""
    tpm = ctx.tpm
    parent = None if parent_handle >> 24 == HT.PERMANENT else objects.lookup(tpm,
                                                                            parent_handle)
    derivation = parent is not None and is_derivation_parent(parent)
    if parent is not None and not parent.is_parent and not derivation:
        raise TpmError(RC.TYPE, handle=1, detail="neither a storage nor a derivation parent")
    objects.free_handle(tpm)
    public, derive = _parse_template(in_template, derivation)
    with blame(1):
        auth = adjust_auth(in_sensitive.userAuth, public.nameAlg)
    hierarchy = parent_handle if parent is None else parent.hierarchy
    flags = 0
    if derivation:
        if public.type == ALG.RSA:
            raise TpmError(RC.TYPE, parameter=2, detail="RSA keys cannot be derived")
        if public.objectAttributes & ObjectAttr.SENSITIVE_DATA_ORIGIN:
            # The reference returns this one without a parameter number.
            raise TpmError(RC.ATTRIBUTES, detail="a derived object's data is not the TPM's")
        with blame(2):
            public_attributes_validation(parent, public)
        label, context = _label_and_context(derive, in_sensitive.data)
        sensitive = keys.derive_object(parent.public, parent.sensitive.sensitive, label,
                                       context, public, auth)
    else:
        with blame(2):
            create_checks(parent, public, len(in_sensitive.data))
        if parent is None:
            flags = FLAG_PRIMARY
            sensitive = _derive_primary(tpm, hierarchy, public, auth, in_sensitive.data)
        else:
            sensitive = keys.create_object(public, auth, in_sensitive.data, tpm.drbg,
                                           deterministic=False)
    obj = _new_object(tpm, public, sensitive, parent=parent, parent_handle=parent_handle,
                      hierarchy=hierarchy, extra_flags=flags)
    private = b""
    if parent is not None and not derivation:
        private = protection.wrap(parent.public, parent.seed_value, obj.name,
                                  obj.sensitive_area, tpm.drbg.generate)
    handle = objects.insert(tpm, obj)
    return handle, private, obj.public, obj.name
