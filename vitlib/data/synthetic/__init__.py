"""The synthetic world: generated data in the real datasets' on-disk formats.

One small world of ten object classes, written in the layout and annotation format of every
dataset the workflow reads, so the real readers (:mod:`vitlib.data.readers`) read it unchanged:

=================  ==========================================================================
part               files under ``out``
=================  ==========================================================================
``imagenet``       ``imagenet/{train,val}/<class>/<nnnn>.png`` (ImageNet class folders)
``coco``           ``coco/images/val2017/<id:012d>.jpg``, ``coco/annotations/instances_
                   val2017.json`` (polygons, a few crowd RLEs, one image without annotations)
``partimagenet``   ``partimagenet/{train,val,test}.json``, ``partimagenet/<split>/<wnid>/
                   <wnid>_<n>.JPEG``, ``partimagenet/imagenet_class_index.json``
``retrieval``      ``rsynth/gnd_rsynth.pkl``, ``rsynth/jpg/<name>.jpg`` (Revisited Oxford/Paris)
``davis``          ``davis/ImageSets/2017/{train,val}.txt``, ``davis/JPEGImages/480p/<seq>/
                   <nnnnn>.jpg``, ``davis/Annotations/480p/<seq>/<nnnnn>.png`` (palette PNGs)
``spair``          ``spair/JPEGImages/<cat>/<im>.jpg``, ``spair/ImageAnnotation/<cat>/<im>.json``,
                   ``spair/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<cat>.json``,
                   ``spair/Layout/large/{trn,val,test}.txt``
=================  ==========================================================================

and ``world.json`` (seed, size and what each part holds).

Every object is a polygon in its own frame (unit radius, head towards +x): discs are
32-gons, the ring a C-shaped annulus, the crescent an outer arc plus an inner arc.  It has
three named parts (:data:`PART_NAMES`, bands across the object along its own x axis, each
drawn in its own shade of the object's colour) and nine semantic keypoints
(:data:`KEYPOINTS`).  The band cuts are inserted into the object polygon as vertices, and each
part is the object polygon clipped to its band (Sutherland–Hodgman against the two
half-planes; pieces cut apart by a band are separate polygons), so the part polygons share
their edges with the object polygon exactly.  Every mask is rasterised by pycocotools from
the very polygon (or RLE) written to the annotation file: the drawn pixels are what
``COCO.annToMask`` decodes, and the part masks of an object tile its mask.

Class, instance and part identity are carried by shape and arrangement only: a class is its
outline; colour (a random hue, saturation and value per object, a random shade of it per
part), texture (one of ten kinds: stripes, dots, checks, ... with random frequency, phase and
contrast), scale, rotation, position, background (gradients, smooth noise, stripes) and
clutter lines are nuisances drawn independently of the class, so colour statistics alone
classify at chance.  A retrieval landmark is an arrangement of objects (classes and poses)
and each of its views redraws the background and every object's colours and texture; DAVIS
sequences move their annotated objects among unannotated distractors of other shapes with
the very colours and texture of an annotated object.

Deterministic by seed: every image draws from its own ``np.random.default_rng([seed, part,
...])`` stream (no global random state), PNGs and JPEGs (quality 90) are written with fixed
settings and JSON with fixed formatting, so the same arguments give byte-identical files.

Command line: ``python -m vitlib.data.synthetic --out DIR --seed N --size {tiny,demo}``
(``--parts coco,davis`` for some parts only; ``--examples DIR`` renders the example figures of
an existing world).

Modules (everything is importable from this package):

=================  ==========================================================================
module             what it holds or generates
=================  ==========================================================================
``common``         class/part/keypoint names, size presets, per-image random streams and
                   the fixed-settings PNG/JPEG/JSON writers shared by every part
``shapes``         class outlines in the object frame with band cuts, part loops, keypoints
``draw``           random colours and textures, object instances and their COCO polygons,
                   painting (pycocotools rasterisation), backgrounds, cameras, placement
``imagenet``       the ``imagenet`` part (ImageNet class folders, train and val)
``coco``           the ``coco`` part (COCO instances JSON with polygons and crowd RLEs)
``partimagenet``   the ``partimagenet`` part (PartImageNet part-category JSONs and images)
``retrieval``      the ``retrieval`` part (Revisited Oxford/Paris ``gnd`` pickle and images)
``davis``          the ``davis`` part (DAVIS-2017 sequences, palette PNG annotations)
``spair``          the ``spair`` part (SPair-71k images, image and pair annotations, layout)
``world``          :func:`generate`: the parts asked for and ``world.json``
``examples``       :func:`render_examples`: the example figures of a generated world
``cli``            the command line (:func:`main`; ``__main__`` runs it)
=================  ==========================================================================
"""

from __future__ import annotations

from vitlib.data.synthetic.cli import main
from vitlib.data.synthetic.coco import (
    coco_category_id,
    coco_image,
    generate_coco,
    rle_uncompressed,
)
from vitlib.data.synthetic.common import (
    CLASSES,
    KEYPOINTS,
    LANDMARK_NAMES,
    MOTIONS,
    PART_ALIASES,
    PART_NAMES,
    PART_SIZES,
    PARTS,
    PIN_SPLIT_CYCLE,
    SIZES,
    SPAIR_CLASSES,
    SUPERCATEGORIES,
    wnid,
)
from vitlib.data.synthetic.davis import (
    DavisScene,
    davis_scene,
    davis_sequence,
    generate_davis,
    voc_palette,
)
from vitlib.data.synthetic.draw import (
    Backdrop,
    Camera,
    Obj,
    keypoints,
    object_polygon,
    paint,
    part_polygons,
    rasterise,
    render_backdrop,
)
from vitlib.data.synthetic.draw import _new_obj as _new_obj  # private, used by the tests
from vitlib.data.synthetic.examples import render_examples
from vitlib.data.synthetic.imagenet import (
    generate_imagefolder,
    generate_imagenet,
    imagenet_image,
    render_image,
)
from vitlib.data.synthetic.partimagenet import (
    generate_partimagenet,
    partimagenet_image,
    partimagenet_split,
)
from vitlib.data.synthetic.retrieval import (
    Scene,
    generate_retrieval,
    landmark_scene,
    landmark_view,
    render_view,
)
from vitlib.data.synthetic.shapes import Shape
from vitlib.data.synthetic.shapes import _shape as _shape  # private, used by the tests
from vitlib.data.synthetic.spair import generate_spair, spair_image, spair_imname
from vitlib.data.synthetic.world import generate

__all__ = [
    "CLASSES",
    "KEYPOINTS",
    "LANDMARK_NAMES",
    "MOTIONS",
    "PARTS",
    "PART_ALIASES",
    "PART_NAMES",
    "PART_SIZES",
    "PIN_SPLIT_CYCLE",
    "SIZES",
    "SPAIR_CLASSES",
    "SUPERCATEGORIES",
    "Backdrop",
    "Camera",
    "DavisScene",
    "Obj",
    "Scene",
    "Shape",
    "coco_category_id",
    "coco_image",
    "davis_scene",
    "davis_sequence",
    "generate",
    "generate_coco",
    "generate_davis",
    "generate_imagefolder",
    "generate_imagenet",
    "generate_partimagenet",
    "generate_retrieval",
    "generate_spair",
    "imagenet_image",
    "keypoints",
    "landmark_scene",
    "landmark_view",
    "main",
    "object_polygon",
    "paint",
    "part_polygons",
    "partimagenet_image",
    "partimagenet_split",
    "rasterise",
    "render_backdrop",
    "render_examples",
    "render_image",
    "render_view",
    "rle_uncompressed",
    "spair_image",
    "spair_imname",
    "voc_palette",
    "wnid",
]
