"""The JCAMP-DX reader, one syntax feature at a time."""

from __future__ import annotations

import numpy as np
import pytest

from bruker.jcamp import Enum, JcampError, Struct, parse_jcamp, read_jcamp

HEADER = "##TITLE=Parameter List\n##JCAMPDX=4.24\n##ORIGIN=Bruker BioSpin MRI GmbH\n"


def parse(body: str):
    return parse_jcamp(HEADER + body + "\n##END=\n")


def test_scalars_are_typed():
    p = parse("##$AnInt=42\n##$Neg=-7\n##$AFloat=1.5e-3\n##$Plain=3.25\n##$Sym=Head_Supine")
    assert p["AnInt"] == 42 and type(p["AnInt"]) is int
    assert p["Neg"] == -7
    assert p["AFloat"] == pytest.approx(0.0015) and type(p["AFloat"]) is float
    assert p["Plain"] == 3.25
    assert isinstance(p["Sym"], Enum) and p["Sym"] == "Head_Supine"


def test_header_records_are_kept_apart_from_parameters():
    p = parse("##$X=1")
    assert p.header["ORIGIN"] == "Bruker BioSpin MRI GmbH"
    assert "TITLE" not in p and list(p) == ["X"]


def test_comments_are_dropped():
    p = parse("$$ whole-line comment\n##$A=( 3 )\n1 2 $$ trailing comment\n$$ another\n3\n##$B=<x $$ y>")
    assert p["A"].tolist() == [1, 2, 3]
    # "$$" inside a string is text, not a comment.
    assert p["B"] == "x $$ y"


def test_multi_line_numeric_array_with_shape():
    p = parse("##$M=( 2, 3 )\n1 2\n3 4\n5 6")
    assert p["M"].shape == (2, 3)
    assert p["M"].dtype.kind == "i"
    assert p["M"][1].tolist() == [4, 5, 6]


def test_mixed_int_and_float_array_is_float():
    p = parse("##$V=( 3 )\n1 2.5 -3e2")
    assert p["V"].dtype == np.float64
    assert p["V"].tolist() == [1.0, 2.5, -300.0]


def test_character_array_is_a_string():
    p = parse("##$Name=( 65 )\n<jd_MultiSlicePhantom>")
    assert p["Name"] == "jd_MultiSlicePhantom" and type(p["Name"]) is str


def test_string_array_keeps_outer_shape():
    p = parse("##$Units=( 2, 65 )\n<mm> <cm>")
    assert p["Units"].shape == (2,)
    assert p["Units"].tolist() == ["mm", "cm"]


def test_string_escapes_and_wrapped_lines():
    p = parse("##$S=( 80 )\n<a \\<b\\> c\\\\d \\n>\n##$W=(1, <\ngauss.exc>, 2)")
    assert p["S"] == "a <b> c\\d \n"
    # A line break inside <...> is ParaVision's wrapping, not content.
    assert p["W"] == Struct((1, "gauss.exc", 2))


def test_empty_string():
    assert parse("##$E=( 9 )\n<>")["E"] == ""


def test_enum_array():
    p = parse("##$Ori=( 3 )\naxial sagittal coronal")
    assert p["Ori"].tolist() == ["axial", "sagittal", "coronal"]
    assert all(isinstance(v, Enum) for v in p["Ori"])


def test_struct_scalar_with_strings_and_nesting():
    p = parse("##$FG=(3, <FG_SLICE>, <>, 0, 2)\n##$N=(1, (2, <in>, (3.5, Sym)), <out>)")
    assert p["FG"] == Struct((3, "FG_SLICE", "", 0, 2))
    nested = p["N"]
    assert isinstance(nested[1], Struct) and isinstance(nested[1][2], Struct)
    assert nested[1][2] == (3.5, "Sym") and isinstance(nested[1][2][1], Enum)
    assert nested[2] == "out"


def test_struct_array():
    p = parse("##$Dep=( 2 )\n(<VisuCoreOrientation>, 0) (<VisuCorePosition>, 0)")
    assert p["Dep"].shape == (2,)
    assert p["Dep"][1] == Struct(("VisuCorePosition", 0))


def test_struct_on_its_own_line_is_not_a_shape():
    # "(0, 0)" with values following on the line is a struct array element.
    p = parse("##$Pc=( 2 )\n(0, 0) (1, 2)")
    assert [tuple(v) for v in p["Pc"]] == [(0, 0), (1, 2)]


def test_run_length_encoding():
    p = parse("##$R=( 2, 4 )\n@3*(0) 1 @2*(2.5) 7 8")
    assert p["R"].shape == (2, 4)
    assert p["R"].ravel().tolist() == [0, 0, 0, 1, 2.5, 2.5, 7, 8]
    q = parse("##$S=( 3 )\n@3*(<ab>)")
    assert q["S"].tolist() == ["ab", "ab", "ab"]


def test_latin1_text(tmp_path):
    path = tmp_path / "subject"
    path.write_bytes((HEADER + "##$SUBJECT_name_string=( 65 )\n<Müller^Zoë>\n##END=\n").encode("latin-1"))
    assert read_jcamp(path)["SUBJECT_name_string"] == "Müller^Zoë"


def test_empty_array():
    p = parse("##$Z=( 0 )\n##$Next=1")
    assert p["Z"].size == 0 and p["Next"] == 1


def test_unterminated_string_is_an_error_naming_the_parameter():
    with pytest.raises(JcampError, match="Broken"):
        parse("##$Broken=( 65 )\n<never closed")


def test_end_stops_reading():
    p = parse_jcamp("##$A=1\n##END=\n##$B=2\n")
    assert "A" in p and "B" not in p


def test_real_visu_pars(phantom):
    p = read_jcamp(phantom / "100" / "pdata" / "1" / "visu_pars")
    assert p["VisuCoreSize"].tolist() == [128, 128]
    assert p["VisuCoreOrientation"].shape == (3, 9)
    assert p["VisuCorePosition"].shape == (3, 3)
    assert p["VisuCoreWordType"] == "_16BIT_SGN_INT"
    assert p["VisuFGOrderDesc"][0] == Struct((3, "FG_SLICE", "", 0, 2))
    assert p["VisuUid"].startswith("2.16.756.5.5.100.")


def test_real_method_wrapped_struct(phantom):
    p = read_jcamp(phantom / "100" / "method")
    assert p["ExcPulse"][8] == "gauss.exc"
    assert p["PVM_SPackArrSliceOrient"].tolist() == ["axial", "sagittal", "coronal"]
    assert p["PVM_EncSteps1"].tolist() == list(range(-64, 64))
